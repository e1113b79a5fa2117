"""Distillation: the frozen-teacher loss terms (``Distiller``; ``MLCAKDistiller`` for ViTs), feature hooks and adapters."""

from .cache import SAMPLE_INDEX, TeacherOutputCache, with_sample_index
from .distiller import Distiller, freeze, load_frozen, make_distiller, trainable_parameters
from .features import FeatureAdapter, FeatureHooks, adapter_key, build_adapters, probe_feature_shapes, resize_maps
from .mlcak import MLCAKDistiller, make_mlcak_distiller

__all__ = [
    "SAMPLE_INDEX",
    "TeacherOutputCache",
    "with_sample_index",
    "Distiller",
    "freeze",
    "load_frozen",
    "make_distiller",
    "trainable_parameters",
    "FeatureAdapter",
    "FeatureHooks",
    "adapter_key",
    "build_adapters",
    "probe_feature_shapes",
    "resize_maps",
    "MLCAKDistiller",
    "make_mlcak_distiller",
]
