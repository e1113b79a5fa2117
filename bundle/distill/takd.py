"""The distillation step of the teacher -> assistant -> student chain (TAKD), in one place.

Bandyopadhyay et al., "A distillation based approach for the diagnosis of diseases":
each stage learns from hard labels, from its teacher's temperature-softened labels,
and from a distance between its feature maps and its teacher's:

``L = lambda_hard * L_hard + lambda_soft * L_soft(s, t; T) + lambda_feat * sum_k D(A_k(f_s^k), f_t^k)``

* assistant from teacher: ``D`` = :class:`~bundle.losses.FeatureKLLoss`;
* student from assistant: ``D`` = :class:`~bundle.losses.FeatureWassersteinLoss`, at
  the output of each of the student's three conv blocks;
* the compact student from DenseNet161 (Termritthikun et al.) takes the same step, with
  ``FeatureKLLoss`` at three scales.

``A_k`` are :class:`~bundle.distill.FeatureAdapter` (1x1 conv + resize), trained with
the student. Features are captured by forward hooks on the module names of
``feature_pairs``; neither network is rewritten. The teacher is a teacher source
(:mod:`bundle.distill.teachers`): the frozen network run on each batch, its outputs
computed once (``teacher_cache``), or a recorded teacher read from a predictions file
(``teacher_predictions``), which has logits and no feature maps: the feature term then
needs weight 0, and the soft term leaves out images the file has no row for
(``teacher_predictions_missing: skip``).

Config example (student from assistant; ``configs/student.json#distiller`` builds it with
:func:`bundle.distill.make_distiller`)::

    "distiller": {
        "_target_": "bundle.distill.make_distiller",
        "student": "@network",
        "hard_loss": "@loss",
        "teacher_network": "$@networks#assistant",
        "checkpoint": "outputs/assistant/model.pt",
        "soft_loss": {"_target_": "bundle.losses.SoftLabelLoss", "task": "@data#task", "temperature": 20.0},
        "feature_loss": {"_target_": "bundle.losses.FeatureWassersteinLoss"},
        "feature_pairs": [["conv1", "features.denseblock1"], ["conv2", "features.denseblock2"],
                          ["conv3", "features.denseblock3"]],
        "weights": {"hard": 1.0, "soft": 1.0, "feature": 0.1},
        "input_shape": [1, "@image_size", "@image_size"]
    }

Teacher at a larger input size (``teacher_image_size`` > ``image_size``, e.g. a 64 px
teacher for a 32 px student, or 224 px for 64 px): the training preprocessing
(``configs/student.json#preprocessing#train``) augments each image at the teacher's size,
keeps that view as the batch's ``teacher_image`` and area-downsamples the student's copy,
so both see the same augmented radiograph; the adapters resize the student's maps to
the teacher's. Networks built for ImageNet (EfficientNet, DenseNet) reduce their input
32-fold: at 32 px their last maps are 1 x 1, and they gain from a larger view even of an
upsampled 28 px image, while the student keeps its own cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from .base import Distiller
from .features import FeatureHooks, adapter_key, build_adapters, probe_feature_shapes
from .teachers import TeacherOutput, TeacherSource

__all__ = ["TAKDDistiller"]


class TAKDDistiller(Distiller):
    """Hard labels, soft labels at a temperature, and feature-map distances to a teacher.

    Args:
        student: the network being trained (its hooks are placed here).
        hard_loss: the stage's hard-label loss.
        teacher: the teacher source (:class:`~bundle.distill.FrozenTeacher` or
            :class:`~bundle.distill.TeacherOutputCache`).
        soft_loss: e.g. :class:`~bundle.losses.SoftLabelLoss`; None disables the term.
        feature_loss: e.g. :class:`~bundle.losses.FeatureWassersteinLoss`; None disables it.
        feature_pairs: ``[student_module, teacher_module]`` names whose outputs are compared.
        weights: ``{"hard": ..., "soft": ..., "feature": ...}`` (missing keys: 1, 1, 0).
        input_shape: one student input without the batch axis, used once to size the adapters.

    Raises:
        ValueError: the feature term is on (pairs given, weight > 0) but the teacher gives no
            such maps (a recorded teacher has logits only).
    """

    default_weights: ClassVar[dict[str, float]] = {"hard": 1.0, "soft": 1.0, "feature": 0.0}

    def __init__(
        self,
        student: nn.Module,
        hard_loss: nn.Module,
        teacher: TeacherSource,
        soft_loss: nn.Module | None = None,
        feature_loss: nn.Module | None = None,
        feature_pairs: Sequence[Sequence[str]] = (),
        weights: Mapping[str, float] | None = None,
        input_shape: Sequence[int] = (1, 224, 224),
    ) -> None:
        super().__init__(student, hard_loss, teacher, weights)
        self.soft_loss, self.feature_loss = soft_loss, feature_loss
        pairs = [(str(s), str(t)) for s, t in feature_pairs]
        if pairs and feature_loss is None:
            raise ValueError("feature_pairs are given but feature_loss is None")
        absent = sorted({t for _, t in pairs} - teacher.feature_names)
        if absent and self.weights["feature"]:
            raise ValueError(
                f"the feature-map term (loss_weights#feature = {self.weights['feature']}) needs the teacher's maps of "
                f"{absent}, which {getattr(teacher, 'source', type(teacher).__name__)} does not have: recorded "
                f"predictions hold logits only. Give a teacher network (a checkpoint) or set loss_weights#feature to 0")
        self.feature_pairs = [] if absent else pairs
        student_names = [s for s, _ in self.feature_pairs]
        teacher_names = [t for _, t in self.feature_pairs]
        device = next(self.student.parameters()).device
        self.adapters = build_adapters(
            probe_feature_shapes(self.student, student_names, tuple(int(v) for v in input_shape)),
            teacher.feature_shapes(teacher_names), self.feature_pairs,
        ).to(device)
        self.student_hooks = FeatureHooks(self.student, student_names)

    def distill_terms(self, logits: torch.Tensor, batch: Mapping[str, Any], teacher: TeacherOutput
                      ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.soft_loss is not None and self.weights["soft"]:
            terms["soft"] = self.weights["soft"] * self.soft_loss(logits, teacher.logits, teacher_mask=teacher.mask)
            if teacher.mask is not None:  # a mean over the covered samples only: the epoch mean weighs it by them
                self.term_weights["soft"] = float(teacher.mask.sum())
        if self.feature_pairs and self.weights["feature"]:
            student_maps = self.student_hooks.features
            for s, t in self.feature_pairs:
                adapted = self.adapters[adapter_key(s, t)](student_maps[s])
                terms[f"feature/{s}"] = self.weights["feature"] * self.feature_loss(adapted, teacher.features[t])
        self.student_hooks.clear()
        return terms
