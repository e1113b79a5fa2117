"""Readers of real chest X-ray data sets; each returns a :class:`~bundle.data.datalist.Datalist`.

One module per format (``medmnist``, ``chexpert``, ``nih``, ``vindr``, ``padchest``, ``cxr3``,
``csv_datalist``, ``folder``); they share the label-file and path helpers of ``common``, so that
every data set reports problems the same way: a :class:`~bundle.data.errors.CXRDataError` that
names the file and the problem (missing columns are listed; an unknown label value is given with
its column and row; duplicate rows are counted, with an example; missing images are counted, with
the first few). Import the readers from here (``from bundle.data.readers import read_nih``).

Row numbers in messages count data rows from 1 (the header is not a row); the message also
gives the line of the file (line = row + 1).

All readers accept ``.csv`` and compressed ``.csv.gz`` files (pandas infers the compression).
Image paths are made absolute by joining them with ``image_root``, which defaults to the
folder of the label file. With ``check_files=True`` (the default) every image is checked to
exist and *all* missing images are reported in one error; ``missing="keep"`` keeps their
records instead (at the path where the image was expected), so that the data-set check
(:mod:`bundle.data.check`, which :func:`bundle.data.load_splits` users run) reports them
together with every other problem and ``skip_bad_records`` can leave them out;
``check_files=False`` does not touch the image folder (use it to parse label files without
their images). A label file with no data rows is an error.

**Paths stay inside the data folder.** An image path that leaves ``image_root`` (``../..``, or an
absolute path elsewhere) is refused, naming the rows, unless ``allow_outside_paths=True``
(dataset option ``allow_outside_paths``) or ``image_root`` names a folder that holds them all.
The check is on the written path (``..`` resolved, symbolic links inside the folder followed as
usual), before any file is touched.

=================  ==========  ===============================================================
reader             task        label vector
=================  ==========  ===============================================================
read_medmnist      both        PneumoniaMNIST: [Normal, Pneumonia]; ChestMNIST: NIH's 14
read_chexpert      multilabel  CheXpert's 14 observations (uncertainty and blank policies)
read_nih           multilabel  NIH's 14 findings (no "No Finding" output, see there)
read_vindr         multilabel  VinDr-CXR's 14 findings + "No Finding" (radiologists' vote)
read_csv_datalist  both        0/1 label columns, or one class-name column
read_image_folder  multiclass  one class per sub-folder (sorted names)
read_cxr3          multiclass  [Normal, Pneumonia, COVID-19]
read_padchest      multilabel  PadChest report terms -> 17 findings + "No Finding"
=================  ==========  ===============================================================
"""

from .chexpert import read_chexpert
from .common import normalise_view
from .csv_datalist import read_csv_datalist
from .cxr3 import CXR3_CLASSES, read_cxr3
from .folder import KERMANY_PATIENT_PATTERN, read_image_folder
from .medmnist import PNEUMONIAMNIST_CLASSES, read_medmnist
from .nih import NIH_BOX_GRID, image_file_size, nih_boxes_to_image, read_nih, read_nih_boxes
from .padchest import PADCHEST_PROJECTIONS, read_padchest
from .vindr import read_vindr

__all__ = [
    "CXR3_CLASSES",
    "KERMANY_PATIENT_PATTERN",
    "NIH_BOX_GRID",
    "PADCHEST_PROJECTIONS",
    "PNEUMONIAMNIST_CLASSES",
    "image_file_size",
    "nih_boxes_to_image",
    "normalise_view",
    "read_chexpert",
    "read_csv_datalist",
    "read_cxr3",
    "read_image_folder",
    "read_medmnist",
    "read_nih",
    "read_nih_boxes",
    "read_padchest",
    "read_vindr",
]
