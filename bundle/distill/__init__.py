"""Distillation plumbing: intermediate features by forward hooks, and adapters between feature maps."""

from .features import FeatureAdapter, FeatureHooks, adapter_key, build_adapters, probe_feature_shapes

__all__ = ["FeatureAdapter", "FeatureHooks", "adapter_key", "build_adapters", "probe_feature_shapes"]
