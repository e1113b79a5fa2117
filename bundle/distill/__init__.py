"""Distillation methods on one contract (``base.Distiller``), their teacher sources, feature hooks and adapters."""

from .base import Distiller, NoTeacher, trainable_parameters
from .cache import TeacherOutputCache, with_sample_index
from .factory import make_distiller, make_mlcak_distiller, make_teacher
from .features import FeatureAdapter, FeatureHooks, adapter_key, build_adapters, probe_feature_shapes, resize_maps
from .mlcak import MLCAKDistiller
from .recorded import read_teacher_predictions, record_id
from .takd import TAKDDistiller
from .teachers import FrozenTeacher, TeacherOutput, freeze, load_frozen

__all__ = [
    "Distiller",
    "NoTeacher",
    "TAKDDistiller",
    "MLCAKDistiller",
    "trainable_parameters",
    "FrozenTeacher",
    "TeacherOutput",
    "TeacherOutputCache",
    "freeze",
    "load_frozen",
    "make_teacher",
    "make_distiller",
    "make_mlcak_distiller",
    "read_teacher_predictions",
    "record_id",
    "with_sample_index",
    "FeatureAdapter",
    "FeatureHooks",
    "adapter_key",
    "build_adapters",
    "probe_feature_shapes",
    "resize_maps",
]
