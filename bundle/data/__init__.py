"""The data layer: image loading, readers of real data sets, synthetic phantoms, splits."""

from .balance import balanced_class_weights, balanced_sampler
from .check import check_records, check_splits
from .datalist import Datalist
from .errors import CXRDataError
from .image_cache import CachedImageDataset, default_num_workers
from .io import LoadCXR, LoadCXRd, load_cxr
from .phantoms import make_phantom_datalist, render_phantom
from .sources import DATASETS, DataSplits, load_splits

__all__ = [
    "balanced_class_weights",
    "balanced_sampler",
    "check_records",
    "check_splits",
    "CachedImageDataset",
    "Datalist",
    "default_num_workers",
    "CXRDataError",
    "LoadCXR",
    "LoadCXRd",
    "load_cxr",
    "make_phantom_datalist",
    "render_phantom",
    "DATASETS",
    "DataSplits",
    "load_splits",
]
