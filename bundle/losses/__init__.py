"""Loss terms. Each module holds one term, with its formula, its paper and a config example."""

from .feature_kl import FeatureKLLoss
from .hard_label import HardLabelLoss
from .mlcak import MLCAKLoss, match_grids
from .multitask import MultiTaskLoss
from .soft_label import SoftLabelLoss
from .wasserstein import FeatureWassersteinLoss

__all__ = ["FeatureKLLoss", "FeatureWassersteinLoss", "HardLabelLoss", "MLCAKLoss", "MultiTaskLoss", "SoftLabelLoss",
           "match_grids"]
