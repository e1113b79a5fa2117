"""MONAI engines that know about label masks (and, for distillation, teachers)."""

from .evaluator import CXREvaluator
from .trainer import CXRTrainer

__all__ = ["CXRTrainer", "CXREvaluator"]
