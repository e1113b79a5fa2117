"""The one contract every distillation method keeps (mdistiller's ``Distiller`` base is the model).

A method is a :class:`Distiller`: given a training batch and the student's forward function it
returns the student's logits and every loss term of the step, **each already weighted**,
hard labels included::

    logits, terms = distiller.forward_train(batch, student_forward)
    loss = sum(terms.values())

The trainer (:class:`bundle.engines.CXRTrainer`) sums the terms, logs them by name and steps the
optimiser; it knows nothing of teachers. A method owns:

* ``hard_loss``: the stage's hard-label loss (:class:`~bundle.losses.HardLabelLoss`, or
  :class:`~bundle.losses.MultiTaskLoss` for the two-head ViT), called as
  ``hard_loss(logits, label, label_mask)``; a loss returning ``{name: term}`` gives the terms
  ``hard/<name>``; each is multiplied by ``weights["hard"]``;
* ``teacher``: where the teacher's outputs come from (:mod:`bundle.distill.teachers`): a frozen
  network run on each batch (:class:`~bundle.distill.FrozenTeacher`), or its outputs looked up by
  sample (:class:`~bundle.distill.TeacherOutputCache`: computed once from the network, or
  recorded elsewhere and read from a predictions file); None for :class:`NoTeacher`;
* its extra trainable parameters (feature adapters), which :func:`trainable_parameters` hands to
  the optimiser and the resume checkpoint keeps (``state_dict`` of the distiller).

Neither the student nor the teacher network is a submodule: the student is the engine's (in its
checkpoint, optimiser and DDP wrapper), the teacher is frozen and outside all three.

One method per file on this base: :class:`NoTeacher` (here: plain training, mdistiller's
``Vanilla``), :class:`~bundle.distill.TAKDDistiller` (``takd.py``: soft labels and feature maps,
Bandyopadhyay et al.; also the compact student's step), :class:`~bundle.distill.MLCAKDistiller`
(``mlcak.py``: two heads' logits and attention maps, Akhter et al.).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..distributed import unwrap
from ..keys import Keys
from .teachers import TeacherOutput, TeacherSource

__all__ = ["Distiller", "NoTeacher", "trainable_parameters"]

StudentForward = Callable[[torch.Tensor], torch.Tensor]


class Distiller(nn.Module):
    """Base of the distillation methods: hard-label terms, the teacher's outputs, the method's terms.

    Args:
        student: the network being trained (read, not owned: hooks and attention maps are taken from it).
        hard_loss: the hard-label loss, ``hard_loss(logits, label, label_mask)``.
        teacher: a teacher source (see the module docstring), or None.
        weights: loss weights; keys are those of the method's ``default_weights``.

    Subclasses set ``default_weights`` and implement :meth:`distill_terms`.
    """

    default_weights: ClassVar[dict[str, float]] = {"hard": 1.0}

    def __init__(self, student: nn.Module, hard_loss: nn.Module, teacher: TeacherSource | None = None,
                 weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.__dict__["student"] = unwrap(student)  # hooks go on the plain module's names, also under DDP
        self.__dict__["teacher"] = teacher  # not a submodule: outside optimiser, checkpoint and DDP
        self.hard_loss = hard_loss
        self.weights = {**self.default_weights, **{k: float(v) for k, v in dict(weights or {}).items()}}
        unknown = set(self.weights) - set(self.default_weights)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown loss weights {sorted(unknown)}; "
                             f"known: {sorted(self.default_weights)}")

    def forward_train(self, batch: Mapping[str, Any], student_forward: StudentForward
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The student's logits and the weighted loss terms of one training batch (on the device)."""
        self.term_weights: dict[str, float] = {}  # terms that average fewer samples than the batch: how many
        logits = student_forward(batch[Keys.IMAGE])
        terms = self.hard_terms(logits, batch)
        if self.teacher is not None:
            terms.update(self.distill_terms(logits, batch, self.teacher.outputs(batch)))
        return logits, terms

    forward = forward_train

    def hard_terms(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"hard": w * L}``, or ``{"hard/<name>": w * L_name}`` for a loss that returns named terms."""
        result = self.hard_loss(logits, batch[Keys.LABEL], batch.get(Keys.LABEL_MASK))
        weight = self.weights["hard"]
        if isinstance(result, Mapping):
            return {name if name.startswith("hard") else f"hard/{name}": weight * term for name, term in result.items()}
        return {"hard": weight * result}

    def distill_terms(self, logits: torch.Tensor, batch: Mapping[str, Any], teacher: TeacherOutput
                      ) -> dict[str, torch.Tensor]:
        """The method's weighted terms against the teacher's outputs for this batch."""
        raise NotImplementedError

    def extra_parameters(self) -> list[nn.Parameter]:
        """What the method trains besides the student (e.g. feature adapters)."""
        return [p for p in self.parameters() if p.requires_grad]


class NoTeacher(Distiller):
    """Training on hard labels alone (the teacher stages, and every 'alone' baseline).

    Config example::

        "distiller": {"_target_": "bundle.distill.NoTeacher", "student": "@network", "hard_loss": "@loss"}
    """

    def __init__(self, student: nn.Module, hard_loss: nn.Module, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(student, hard_loss, None, weights)

    def distill_terms(self, logits: torch.Tensor, batch: Mapping[str, Any], teacher: TeacherOutput
                      ) -> dict[str, torch.Tensor]:
        return {}


def trainable_parameters(network: nn.Module, distiller: Distiller | None = None) -> list[nn.Parameter]:
    """What the optimiser updates: the network's parameters and the distiller's extra ones (adapters)."""
    return list(network.parameters()) + (distiller.extra_parameters() if distiller is not None else [])
