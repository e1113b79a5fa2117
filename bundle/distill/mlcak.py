"""MLCAK distillation: a low-resolution ViT student learns a high-resolution ViT teacher's
two heads and mean attention map.

Akhter et al., "Low-Resolution Chest X-ray Classification via Knowledge Distillation and
Multi-task Learning" (arXiv 2405.13370). Per training batch:

* the student (:class:`~bundle.networks.CXRViT` at ``image_size``, e.g. 28 px) has run on the
  low-resolution images (:meth:`~bundle.distill.Distiller.forward_train`), which left its attention rows in place;
* the frozen teacher (a ``CXRViT`` at ``teacher_image_size``, e.g. 224 px) runs, under
  ``no_grad``, on the *same* images at high resolution: the batch's ``teacher_image``, which
  the student's training preprocessing makes from the augmented high-resolution image before
  area-downsampling it to the student's size (``configs/vit_student.json``), so both see the
  same augmentation;
* :class:`~bundle.losses.MLCAKLoss` compares the findings logits (alpha), the normal/abnormal
  logits (beta) and the mean attention maps over ``attention_layers`` (gamma; ``"all"`` is
  MLCAK, ``"last"`` the last-layer ablation), the grids matched by
  :func:`~bundle.losses.match_grids`.

The terms come back as ``distill/mlct``, ``distill/mcct``, ``distill/attention``; with the
hard-label terms ``hard/mlct``, ``hard/mcct`` of :class:`~bundle.losses.MultiTaskLoss` (scaled by
``weights["hard"]``) the step has five terms.

The teacher is a teacher source (:mod:`bundle.distill.teachers`): the frozen ViT, whose mean
attention map the source computes after each forward pass, or a recorded teacher (logits read
from a predictions file, e.g. a CNN's 14 findings), which has no attention map: the attention
term then needs weight 0 (gamma), and the normal/abnormal term is left out when the teacher's
layout has no such head (``teacher_heads: 1``).

Config example (``configs/vit_student.json``)::

    "distiller": {
        "_target_": "bundle.distill.make_mlcak_distiller",
        "student": "@network",
        "hard_loss": "@loss",
        "teacher_network": "$@networks#teacher if @teacher_ckpt else None",
        "checkpoint": "@teacher_ckpt",
        "loss": {"_target_": "bundle.losses.MLCAKLoss", "alpha": 1.0, "beta": 1.0, "gamma": 1.0},
        "student_layout": "@data#heads", "teacher_layout": "@data#teacher_heads",
        "attention_layers": "all", "hard_weight": 1.0, "device": "@device"
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .base import Distiller
from .teachers import TeacherOutput, TeacherSource

if TYPE_CHECKING:
    from ..losses.mlcak import MLCAKLoss
    from ..networks.heads import HeadLayout

__all__ = ["MLCAKDistiller", "ATTENTION"]

ATTENTION = "attention"  # the name of the teacher source's mean attention map


class MLCAKDistiller(Distiller):
    """The MLCAK terms of a ViT student against a (frozen, higher-resolution) ViT teacher.

    Args:
        student: the ViT being trained (``attention_map()`` reads its latest forward).
        hard_loss: :class:`~bundle.losses.MultiTaskLoss` (both heads' BCE).
        teacher: the teacher source; a live ViT gives its attention map as ``"attention"``
            (:func:`bundle.distill.make_mlcak_distiller` builds it so).
        loss: :class:`~bundle.losses.MLCAKLoss` (its alpha, beta, gamma are the weights).
        student_layout, teacher_layout: each network's :class:`~bundle.networks.HeadLayout`;
            the findings must be the same (the teacher may have two heads and the student one).
        attention_layers: ``"all"`` (MLCAK), ``"last"``, or layer indices, for both networks.
        hard_weight: weight of the hard-label terms.
    """

    default_weights: ClassVar[dict[str, float]] = {"hard": 1.0}

    def __init__(self, student: nn.Module, hard_loss: nn.Module, teacher: TeacherSource, loss: MLCAKLoss,
                 student_layout: HeadLayout, teacher_layout: HeadLayout,
                 attention_layers: str | int | list[int] = "all", hard_weight: float = 1.0) -> None:
        super().__init__(student, hard_loss, teacher, {"hard": hard_weight})
        self.loss = loss
        self.student_layout, self.teacher_layout = student_layout, teacher_layout
        self.attention_layers = attention_layers
        if student_layout.finding_names != teacher_layout.finding_names:
            raise ValueError(f"student findings {student_layout.finding_names} differ from the teacher's "
                             f"{teacher_layout.finding_names}")
        if loss.gamma:
            if ATTENTION not in teacher.feature_names:
                raise ValueError(f"MLCAK's attention term (gamma = {loss.gamma}) needs a live ViT teacher; "
                                 f"{getattr(teacher, 'source', type(teacher).__name__)} has no attention map "
                                 f"(recorded predictions hold logits only): set loss_weights#attention to 0")
            if not hasattr(self.student, "attention_map"):
                raise ValueError(f"the student ({type(self.student).__name__}) has no attention_map(): MLCAK's "
                                 f"attention term needs bundle.networks.CXRViT (or set gamma to 0)")

    def distill_terms(self, logits: torch.Tensor, batch: Mapping[str, Any], teacher: TeacherOutput
                      ) -> dict[str, torch.Tensor]:
        student_map = self.student.attention_map(self.attention_layers) if self.loss.gamma else None
        teacher_map = teacher.features.get(ATTENTION) if self.loss.gamma else None
        student_findings, student_global = self.student_layout.split(logits)
        teacher_findings, teacher_global = self.teacher_layout.split(teacher.logits)
        terms = self.loss(student_findings, teacher_findings, student_global, teacher_global, student_map, teacher_map)
        return {f"distill/{name}": value for name, value in terms.items()}
