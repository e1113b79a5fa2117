"""Hard-label loss of the two heads (MLCT findings, MCCT normal/abnormal), trained jointly with BCE.

Formula, for the network's logits split by a :class:`~bundle.networks.HeadLayout` into
findings ``z^f`` (N x F) and global ``z^g`` (N x 2, ``[normal, abnormal]``), with the targets
and masks the layout derives from the data set's labels (``y^f, m^f``; one-hot ``y^g, m^g``):

    L_mlct = sum_if m^f_if * BCEWithLogits(z^f_if, y^f_if) / sum_if m^f_if
    L_mcct = sum_ik m^g_ik * BCEWithLogits(z^g_ik, y^g_ik) / sum_ik m^g_ik
    L_hard = w_mlct * L_mlct + w_mcct * L_mcct

returned as the named terms ``{"hard/mlct": w_mlct * L_mlct, "hard/mcct": w_mcct * L_mcct}``
(one head: ``hard/mlct`` alone), which the trainer sums, logs one by one, and scales by the
distiller's ``hard`` weight when there is one. Unknown labels (mask 0) count for nothing.

Paper: Akhter et al., "Low-Resolution Chest X-ray Classification via Knowledge Distillation
and Multi-task Learning" (arXiv 2405.13370): the multi-label (MLCT) and multi-class (MCCT)
tasks are both trained with BCE, jointly; the MCCT head is a two-way output trained with BCE
against the one-hot normal/abnormal label (so each of its two logits is a Bernoulli of its own).

Config example::

    "loss": {"_target_": "bundle.losses.MultiTaskLoss", "layout": "@data#heads",
             "head_weights": {"mlct": 1.0, "mcct": 1.0}}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..networks.heads import HeadLayout
from .hard_label import HardLabelLoss

__all__ = ["MultiTaskLoss"]


class MultiTaskLoss(nn.Module):
    """Masked BCE of the findings head and of the normal/abnormal head, as named terms.

    Args:
        layout: which columns are which head, and how targets follow from the labels.
        head_weights: ``{"mlct": ..., "mcct": ...}`` (missing: 1).
        class_weights: not supported (a clear error instead of being ignored).
    """

    def __init__(self, layout: HeadLayout, head_weights: Mapping[str, float] | None = None,
                 class_weights: object = None) -> None:
        super().__init__()
        if class_weights is not None:
            raise ValueError("class_weights are not supported by the ViT's two-head loss; use --sampling oversample")
        self.layout = layout
        self.head_weights = {"mlct": 1.0, "mcct": 1.0, **dict(head_weights or {})}
        self.bce = HardLabelLoss("multilabel")  # masked mean BCE-with-logits, for both heads

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        findings, global_logits = self.layout.split(logits)
        y_f, m_f, y_g, m_g = self.layout.targets(target.to(logits.device), None if mask is None else mask.to(logits.device))
        terms = {"hard/mlct": self.head_weights["mlct"] * self.bce(findings, y_f, m_f)}
        if global_logits is not None:
            terms["hard/mcct"] = self.head_weights["mcct"] * self.bce(global_logits, y_g, m_g)
        return terms
