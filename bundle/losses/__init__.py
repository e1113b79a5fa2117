"""Loss terms. Each module holds one term, with its formula, its paper and a config example."""

from .feature_kl import FeatureKLLoss
from .hard_label import HardLabelLoss
from .soft_label import SoftLabelLoss
from .wasserstein import FeatureWassersteinLoss

__all__ = ["FeatureKLLoss", "FeatureWassersteinLoss", "HardLabelLoss", "SoftLabelLoss"]
