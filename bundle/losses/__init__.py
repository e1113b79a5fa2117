"""Loss terms. Each module holds one term, with its formula, its paper and a config example."""

from .hard_label import HardLabelLoss

__all__ = ["HardLabelLoss"]
