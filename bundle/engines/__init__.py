"""MONAI engines that know about label masks (and, for distillation, teachers)."""

from .evaluator import CXREvaluator
from .trainer import CXRTrainer, flatten_handlers

__all__ = ["CXRTrainer", "CXREvaluator", "flatten_handlers"]
