"""Hard-label loss with a mask for unknown labels.

Formula, for logits ``z`` (N x C), targets ``y`` and mask ``m`` (1 = label known):

* multi-label: ``L = sum_ic m_ic * BCEWithLogits(z_ic, y_ic; pos_weight=w_c) / sum_ic m_ic``
* multi-class: ``L = sum_i m_i * CE(z_i, argmax y_i; w) / sum_i m_i`` with ``m_i = min_c m_ic``

Unknown labels (CheXpert's uncertain or blank findings under the "ignore" and
"unknown" policies) contribute nothing, instead of being guessed as negatives.
``w`` are optional class weights for imbalance (:func:`bundle.data.balanced_class_weights`):
per-class weights of the cross-entropy (multi-class), or BCE's ``pos_weight``, the weight
of a finding's positive examples (multi-label, typically negatives / positives).

Paper: the hard-label term of every stage in Bandyopadhyay et al. (BCE on CheXpert).

Config example::

    "loss": {"_target_": "bundle.losses.HardLabelLoss", "task": "@task", "class_weights": null}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HardLabelLoss"]


class HardLabelLoss(nn.Module):
    """Masked BCE-with-logits (multi-label) or cross-entropy (multi-class).

    Args:
        task: ``"multilabel"`` or ``"multiclass"``.
        class_weights: optional per-class weights (length C): cross-entropy weights
            (multi-class) or ``pos_weight`` (multi-label).
    """

    def __init__(self, task: str = "multilabel", class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
        self.task = task
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        target = target.to(logits.dtype)
        mask = torch.ones_like(target) if mask is None else mask.to(logits.dtype)
        if self.task == "multilabel":
            pos_weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
            per_label = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
            return (per_label * mask).sum() / mask.sum().clamp_min(1.0)
        per_sample = F.cross_entropy(logits, target.argmax(dim=1), weight=self.class_weights, reduction="none")
        sample_mask = mask.min(dim=1).values
        return (per_sample * sample_mask).sum() / sample_mask.sum().clamp_min(1.0)
