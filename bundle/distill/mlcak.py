"""MLCAK distillation: a low-resolution ViT student learns a high-resolution ViT teacher's
two heads and mean attention map.

Akhter et al., "Low-Resolution Chest X-ray Classification via Knowledge Distillation and
Multi-task Learning" (arXiv 2405.13370). Per training batch:

* the student (:class:`~bundle.networks.CXRViT` at ``image_size``, e.g. 28 px) has run on the
  low-resolution images (the trainer's forward pass), which left its attention rows in place;
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
hard-label terms ``hard/mlct``, ``hard/mcct`` of :class:`~bundle.losses.MultiTaskLoss` the
trainer logs five terms. The trainer multiplies the hard terms by ``weights["hard"]``.

The teacher is frozen exactly as in :class:`~bundle.distill.Distiller`: eval mode whatever
``train()`` says, no gradients, not a submodule (outside the optimiser, the checkpoint and DDP).
The student is not a submodule either (it is only read). ``adapters`` is empty (the optimiser
and the resume checkpoint ask every distiller for it).

Config example (``configs/vit_student.json``)::

    "distiller": {
        "_target_": "bundle.distill.make_mlcak_distiller",
        "student": "@network",
        "teacher_network": "$@networks#teacher if @teacher_ckpt else None",
        "checkpoint": "@teacher_ckpt",
        "loss": {"_target_": "bundle.losses.MLCAKLoss", "alpha": 1.0, "beta": 1.0, "gamma": 1.0},
        "student_layout": "@data#heads", "teacher_layout": "@data#teacher_heads",
        "attention_layers": "all", "hard_weight": 1.0, "device": "@device"
    }
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..distributed import unwrap
from .distiller import freeze, load_frozen

if TYPE_CHECKING:
    from ..losses.mlcak import MLCAKLoss
    from ..networks.heads import HeadLayout

__all__ = ["MLCAKDistiller", "make_mlcak_distiller"]


class MLCAKDistiller(nn.Module):
    """The MLCAK terms of a ViT student against a frozen, higher-resolution ViT teacher.

    Args:
        student: the ViT being trained (``attention_map()`` reads its latest forward).
        teacher: the frozen teacher ViT (see :func:`~bundle.distill.load_frozen`).
        loss: :class:`~bundle.losses.MLCAKLoss` (its alpha, beta, gamma are the weights).
        student_layout, teacher_layout: each network's :class:`~bundle.networks.HeadLayout`;
            the findings must be the same (the teacher may have two heads and the student one).
        attention_layers: ``"all"`` (MLCAK), ``"last"``, or layer indices, for both networks.
        hard_weight: weight of the hard-label terms (applied by the trainer).

    Calling it with the teacher's images (the batch's ``teacher_image``), the student's logits
    and (unused) sample indices returns the weighted terms.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: MLCAKLoss, student_layout: HeadLayout,
                 teacher_layout: HeadLayout, attention_layers: str | int | list[int] = "all",
                 hard_weight: float = 1.0) -> None:
        super().__init__()
        student = unwrap(student)
        self.__dict__["teacher"] = freeze(teacher)
        self.__dict__["student"] = student
        self.loss = loss
        self.student_layout, self.teacher_layout = student_layout, teacher_layout
        self.attention_layers = attention_layers
        self.adapters = nn.ModuleDict()
        self.weights = {"hard": float(hard_weight), "mlct": loss.alpha, "mcct": loss.beta, "attention": loss.gamma}
        if student_layout.finding_names != teacher_layout.finding_names:
            raise ValueError(f"student findings {student_layout.finding_names} differ from the teacher's "
                             f"{teacher_layout.finding_names}")
        if loss.gamma:
            for role, network in (("student", student), ("teacher", teacher)):
                if not hasattr(network, "attention_map"):
                    raise ValueError(f"the {role} ({type(network).__name__}) has no attention_map(): MLCAK's "
                                     f"attention term needs bundle.networks.CXRViT (or set gamma to 0)")

    def train(self, mode: bool = True) -> MLCAKDistiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images: torch.Tensor, student_logits: torch.Tensor,
                sample_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        size = getattr(self.teacher, "image_size", None)
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"the teacher sees {size} px images but got {tuple(images.shape[-2:])}: the student's "
                             f"training preprocessing must give each sample a 'teacher_image' at teacher_image_size "
                             f"(configs/vit_student.json#preprocessing#teacher_view)")
        with torch.no_grad():
            teacher_logits = self.teacher(images)
            teacher_map = self.teacher.attention_map(self.attention_layers) if self.loss.gamma else None
        student_map = self.student.attention_map(self.attention_layers) if self.loss.gamma else None
        student_findings, student_global = self.student_layout.split(student_logits)
        teacher_findings, teacher_global = self.teacher_layout.split(teacher_logits)
        terms = self.loss(student_findings, teacher_findings, student_global, teacher_global, student_map, teacher_map)
        return {f"distill/{name}": value for name, value in terms.items()}


def make_mlcak_distiller(
    student: nn.Module,
    teacher_network: Callable[[], nn.Module] | None,
    checkpoint: str | os.PathLike | None,
    loss: MLCAKLoss,
    student_layout: HeadLayout,
    teacher_layout: HeadLayout,
    attention_layers: str | int | list[int] = "all",
    hard_weight: float = 1.0,
    device: str | torch.device = "cpu",
) -> MLCAKDistiller | None:
    """The student's MLCAK distiller, or None without a teacher (the student without distillation).

    ``teacher_network`` is the teacher's network in callable mode (built, loaded from
    ``checkpoint`` and frozen only when the student distils); a missing checkpoint is an error
    naming ``configs/vit_teacher.json``.
    """
    if teacher_network is None:
        return None
    teacher = load_frozen(teacher_network(), checkpoint, device, role="teacher",
                          stage_config="configs/vit_teacher.json")
    return MLCAKDistiller(student, teacher, loss, student_layout, teacher_layout, attention_layers, hard_weight)
