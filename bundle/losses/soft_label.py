"""Soft-label (temperature) distillation loss.

Formula, for student logits ``s`` and teacher logits ``t`` (N x C), temperature ``T``:

* multi-class (Hinton et al. 2015):
  ``L = T^2 * (1/N) * sum_i KL(softmax(t_i/T) || softmax(s_i/T))``
  (``batchmean``: summed over classes, averaged over samples; 0 when ``s == t``).
* multi-label (one Bernoulli per finding, as CheXpert is):
  ``L = T^2 * mean_ic KL(Bernoulli(q_ic) || Bernoulli(p_ic))`` with ``q = sigmoid(t/T)``,
  ``p = sigmoid(s/T)``, computed as ``BCEWithLogits(s_ic/T, q_ic) - H(q_ic)``: the BCE against
  the soft labels minus their entropy ``H(q) = -q log q - (1-q) log(1-q)``, a constant for the
  student. The gradient is the BCE's (the paper's term); the value is a divergence, 0 when
  ``s == t``, so the logged term says how far the student is from its teacher (the BCE alone
  logs ``T^2`` times the teacher's entropy, about 277 at ``T = 20``, even when they agree).

Why ``T^2``: the gradient of the softened loss with respect to a logit is
``(q_s - q_t) / T`` and, for logits small against ``T``, ``q_s - q_t`` itself
shrinks like ``(s - t) / T``; the gradient thus shrinks like ``1 / T^2``.
Multiplying by ``T^2`` keeps its magnitude comparable across temperatures, so the
weight of the soft term against the hard term need not be re-tuned when ``T``
changes (Hinton et al., "Distilling the knowledge in a neural network", sec. 2).

Mask (``use_mask``): the mask marks labels whose *hard* label is known (1) or
unknown (0, e.g. CheXpert's uncertain or blank findings). The teacher gives a
soft value for every label, so by default (``use_mask=False``) the soft term uses
all labels and the mask is ignored; that is where soft labels help most. With
``use_mask=True`` the multi-label loss is the mean over known labels only, and
the multi-class loss the mean over samples whose labels are all known
(``m_i = min_c m_ic``, as in :class:`~bundle.losses.HardLabelLoss`).

Teacher mask (``teacher_mask``, ``(N,)``): 1 where the teacher has an answer for the sample, 0
where not (a recorded teacher without a row for that image, under ``teacher_predictions_missing:
skip``); those samples are left out of the mean. None: every sample counts.

The teacher side is a target: ``teacher_logits`` is detached, so no gradient
reaches the teacher (or the assistant, when it plays the teacher for the student).

Paper: ``L_soft`` of Bandyopadhyay et al., "A distillation based approach for the
diagnosis of diseases" (eq. 3 and 4): BCE against the teacher's (resp. the
assistant's) temperature-softened labels, ``T = 20`` on CheXpert, ``T = 30`` in
the COVID-19 case study. The multi-class variant is the classic Hinton KD term.

Config example::

    "soft_loss": {"_target_": "bundle.losses.SoftLabelLoss", "task": "@task", "temperature": 20.0}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SoftLabelLoss"]


class SoftLabelLoss(nn.Module):
    """Temperature-softened distillation loss, scaled by ``T^2``.

    Args:
        task: ``"multilabel"`` (BCE against sigmoid soft labels) or ``"multiclass"``
            (KL against softmax soft labels).
        temperature: softening temperature ``T`` (> 0).
        use_mask: restrict the loss to known labels (multi-label) or fully known
            samples (multi-class); by default the mask is ignored.

    Example::

        >>> loss = SoftLabelLoss("multiclass", temperature=4.0)
        >>> float(loss(torch.zeros(2, 3), torch.zeros(2, 3)))
        0.0
    """

    def __init__(self, task: str = "multilabel", temperature: float = 20.0, use_mask: bool = False) -> None:
        super().__init__()
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.task = task
        self.temperature = float(temperature)
        self.use_mask = use_mask

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student and teacher logits differ in shape: {tuple(student_logits.shape)} "
                f"vs {tuple(teacher_logits.shape)}"
            )
        t = self.temperature
        student = student_logits / t
        teacher = teacher_logits.detach().to(student_logits.dtype) / t
        if self.task == "multilabel":
            soft = torch.sigmoid(teacher)
            entropy = F.binary_cross_entropy_with_logits(teacher, soft, reduction="none")  # H(q), no gradient
            per_label = F.binary_cross_entropy_with_logits(student, soft, reduction="none") - entropy
            weights = torch.ones_like(per_label)
            if self.use_mask and mask is not None:
                weights = weights * mask.to(per_label.dtype)
        else:
            log_p_student = F.log_softmax(student, dim=1)
            log_p_teacher = F.log_softmax(teacher, dim=1)
            per_label = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1, keepdim=True)
            weights = torch.ones_like(per_label)
            if self.use_mask and mask is not None:
                weights = weights * mask.to(per_label.dtype).min(dim=1, keepdim=True).values
        if teacher_mask is not None:
            weights = weights * teacher_mask.to(per_label.dtype).reshape(-1, 1)
        if self.use_mask and mask is not None or teacher_mask is not None:
            return (per_label * weights).sum() / weights.sum().clamp_min(1.0) * t * t
        return per_label.mean() * t * t
