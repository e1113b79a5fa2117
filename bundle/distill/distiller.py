"""The distillation step of the teacher -> assistant -> student chain, in one place.

Bandyopadhyay et al., "A distillation based approach for the diagnosis of diseases":
each stage learns from hard labels, from its teacher's temperature-softened labels,
and from a distance between its feature maps and its teacher's:

``L = lambda_hard * L_hard + lambda_soft * L_soft(s, t; T) + lambda_feat * sum_k D(A_k(f_s^k), f_t^k)``

* assistant from teacher: ``D`` = :class:`~bundle.losses.FeatureKLLoss`;
* student from assistant: ``D`` = :class:`~bundle.losses.FeatureWassersteinLoss`, at
  the output of each of the student's three conv blocks.

``A_k`` are :class:`~bundle.distill.FeatureAdapter` (1x1 conv + resize), trained with
the student. Features are captured by forward hooks on the module names of
``feature_pairs``; neither network is rewritten.

The teacher is frozen: ``requires_grad_(False)``, kept in eval mode whatever
``train()`` is called with, run under ``torch.no_grad()``, and not registered as a
submodule (so it is in neither the optimiser, nor the student's checkpoint, nor a
DDP wrapper).

Config example (student from assistant)::

    "distiller": {
        "_target_": "bundle.distill.Distiller",
        "student": "@network",
        "teacher": "$bundle.distill.load_frozen(@teacher_def, @teacher_ckpt, @device)",
        "soft_loss": {"_target_": "bundle.losses.SoftLabelLoss", "task": "@data#task", "temperature": 20.0},
        "feature_loss": {"_target_": "bundle.losses.FeatureWassersteinLoss"},
        "feature_pairs": [["conv1", "features.denseblock1"], ["conv2", "features.denseblock2"],
                          ["conv3", "features.denseblock3"]],
        "weights": {"hard": 1.0, "soft": 1.0, "feature": 0.1},
        "input_shape": [1, "@image_size", "@image_size"],
        "teacher_input_shape": [1, "@teacher_image_size", "@teacher_image_size"]
    }

Teacher at a larger input size (``teacher_image_size`` > ``image_size``, e.g. a 64 px
teacher for a 32 px student, or 224 px for 64 px): the training preprocessing
(``configs/common.json#preprocessing#train``) augments each image at the teacher's size,
keeps that view as the batch's ``teacher_image`` and area-downsamples the student's copy,
so both see the same augmented radiograph; the adapters resize the student's maps to
the teacher's. Networks built for ImageNet (EfficientNet, DenseNet) reduce their input
32-fold: at 32 px their last maps are 1 x 1, and they gain from a larger view even of an
upsampled 28 px image, while the student keeps its own cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..distributed import unwrap
from .cache import TeacherOutputCache
from .features import FeatureHooks, adapter_key, build_adapters, probe_feature_shapes

__all__ = ["Distiller", "load_frozen", "freeze", "make_distiller", "trainable_parameters"]

DEFAULT_WEIGHTS = {"hard": 1.0, "soft": 1.0, "feature": 0.0}


def freeze(network: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher is a fixed function."""
    network.eval()
    network.requires_grad_(False)
    return network


def load_frozen(
    network: nn.Module, checkpoint: str | os.PathLike | None, device: str | torch.device = "cpu", role: str = "teacher",
    stage_config: str | None = None,
) -> nn.Module:
    """Load a trained stage's ``model.pt`` into ``network``, move it to ``device`` and freeze it.

    ``stage_config`` (default ``configs/<role>.json``) names, in the error message, the config
    that trains it; ``--<role>_ckpt`` is the id that points at it.

    Raises:
        FileNotFoundError: no checkpoint given, or the file is missing; the message says
            which stage to train first.
        ValueError: the checkpoint does not fit the network (e.g. a different class count).
    """
    if checkpoint is None or not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"{role} checkpoint not found: {checkpoint!r}. Train the {role} stage first "
            f"(python -m monai.bundle run training --config_file {stage_config or f'configs/{role}.json'}) "
            f"or pass --{role}_ckpt <path to its model.pt>."
        )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) and "model" in state else state
    expected = network.state_dict()
    differing = [f"{key}: checkpoint {tuple(value.shape)}, network {tuple(expected[key].shape)}"
                 for key, value in state.items() if key in expected and tuple(value.shape) != tuple(expected[key].shape)]
    if differing:  # most often: trained for another number of classes
        raise ValueError(f"{checkpoint}: the {role} checkpoint does not match the {role} network (another class "
                         f"count or architecture?): " + "; ".join(differing[:4]))
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint}: the {role} checkpoint does not match the {role} network: {error}") from None
    return freeze(network.to(device))


def trainable_parameters(network: nn.Module, distiller: Distiller | None = None) -> list[nn.Parameter]:
    """What the optimiser updates: the network's parameters and the distiller's adapters."""
    params = list(network.parameters())
    return params + (list(distiller.adapters.parameters()) if distiller is not None else [])


class Distiller(nn.Module):
    """Soft-label and feature-map loss terms of a student against a frozen teacher.

    Args:
        student: the network being trained (its hooks are placed here).
        teacher: the frozen teacher (or assistant); see :func:`load_frozen`.
        soft_loss: e.g. :class:`~bundle.losses.SoftLabelLoss`; None disables the term.
        feature_loss: e.g. :class:`~bundle.losses.FeatureWassersteinLoss`; None disables it.
        feature_pairs: ``[student_module, teacher_module]`` names whose outputs are compared.
        weights: ``{"hard": ..., "soft": ..., "feature": ...}`` (missing keys: 1, 1, 0).
        input_shape: one input without the batch axis, used once to size the adapters.
        teacher_input_shape: the teacher's input, when it sees a larger view (default:
            ``input_shape``).
        cache: precomputed teacher outputs (:class:`~bundle.distill.TeacherOutputCache`);
            the teacher then never runs during training, and each batch must carry
            its ``sample_index``.

    Calling it with a batch and the student's logits (after the student's forward
    pass, whose features the hooks captured) returns the weighted terms
    ``{"soft": ..., "feature/<student_module>": ...}``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        soft_loss: nn.Module | None = None,
        feature_loss: nn.Module | None = None,
        feature_pairs: Sequence[Sequence[str]] = (),
        weights: Mapping[str, float] | None = None,
        input_shape: Sequence[int] = (1, 224, 224),
        teacher_input_shape: Sequence[int] | None = None,
        cache: TeacherOutputCache | None = None,
    ) -> None:
        super().__init__()
        student = unwrap(student)  # hooks go on the plain module's names, also under DDP
        self.__dict__["teacher"] = freeze(teacher)  # not a submodule: outside optimiser, checkpoint and DDP
        self.soft_loss, self.feature_loss = soft_loss, feature_loss
        self.feature_pairs = [(str(s), str(t)) for s, t in feature_pairs]
        self.weights = {**DEFAULT_WEIGHTS, **dict(weights or {})}
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        if self.feature_pairs and feature_loss is None:
            raise ValueError("feature_pairs are given but feature_loss is None")
        student_names = [s for s, _ in self.feature_pairs]
        teacher_names = [t for _, t in self.feature_pairs]
        device = next(student.parameters()).device
        shape = tuple(int(v) for v in input_shape)
        teacher_shape = shape if teacher_input_shape is None else tuple(int(v) for v in teacher_input_shape)
        self.adapters = build_adapters(
            probe_feature_shapes(student, student_names, shape),
            probe_feature_shapes(teacher, teacher_names, teacher_shape), self.feature_pairs,
        ).to(device)
        # a teacher with its own view must get it: the student's images would silently be the wrong size
        self.teacher_view_size = teacher_shape[1:] if teacher_shape != shape else None
        self.student_hooks = FeatureHooks(student, student_names)
        self.teacher_hooks = FeatureHooks(teacher, teacher_names)
        self.cache = cache
        if cache is not None:
            missing = sorted(set(teacher_names) - set(cache.features))
            if missing:
                raise ValueError(f"the teacher cache holds no features of {missing}")
            # the cache answers for the teacher from now on: let its weights go (B6 + B7 are ~100M parameters)
            self.teacher_hooks.remove()
            self.__dict__["teacher"] = None

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher's batch-norm statistics never move
        return self

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)

    def teacher_outputs(
        self, images: torch.Tensor, sample_index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher's logits and hooked maps for a batch: from the cache, or by running it."""
        if self.cache is None:
            if self.teacher_view_size is not None and tuple(images.shape[2:]) != self.teacher_view_size:
                raise ValueError(
                    f"the teacher sees {self.teacher_view_size} images (teacher_input_shape) but got "
                    f"{tuple(images.shape[2:])}: the training preprocessing must give each sample a 'teacher_image' "
                    f"at teacher_image_size (configs/common.json#preprocessing#teacher_view)")
            return self.teacher_logits(images), self.teacher_hooks.features
        if sample_index is None:
            raise ValueError("the teacher-output cache needs each batch's 'sample_index' "
                             "(train#dataset data: bundle.distill.with_sample_index(...))")
        return self.cache.lookup(sample_index, images.device)

    def forward(
        self, images: torch.Tensor, student_logits: torch.Tensor, sample_index: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        teacher_logits, teacher_maps = self.teacher_outputs(images, sample_index)
        if self.soft_loss is not None and self.weights["soft"]:
            terms["soft"] = self.weights["soft"] * self.soft_loss(student_logits, teacher_logits)
        if self.feature_pairs and self.weights["feature"]:
            student_maps = self.student_hooks.features
            for s, t in self.feature_pairs:
                adapted = self.adapters[adapter_key(s, t)](student_maps[s])
                terms[f"feature/{s}"] = self.weights["feature"] * self.feature_loss(adapted, teacher_maps[t])
        self.student_hooks.clear()
        self.teacher_hooks.clear()
        return terms


def make_distiller(
    student: nn.Module,
    teacher_network: Callable[[], nn.Module] | None,
    checkpoint: str | os.PathLike | None,
    role: str | None = "teacher",
    device: str | torch.device = "cpu",
    cache: str | None = None,
    cache_dataset: Any = None,
    cache_options: Mapping[str, Any] | None = None,
    **distiller_kwargs: Any,
) -> Distiller | None:
    """The stage's distiller, or None when the stage trains on hard labels alone.

    Stage configs declare their teacher network in callable mode (``"_mode_": "callable"``),
    so that it is built, loaded from ``checkpoint`` and frozen only when this stage
    distills; ``teacher_network=None`` (no teacher checkpoint given) returns None.

    ``cache`` (``"memory"``, ``"disk"`` or None) precomputes the teacher's outputs on
    ``cache_dataset`` (the training list under deterministic preprocessing) with
    :meth:`TeacherOutputCache.compute` (``cache_options``: ``directory``, ``batch_size``,
    ``dtype``, ``num_workers``).
    """
    if teacher_network is None:
        return None
    teacher = load_frozen(teacher_network(), checkpoint, device, role or "teacher")
    if cache:
        if cache_dataset is None:
            raise ValueError("teacher cache requested without a cache_dataset")
        names = list(dict.fromkeys(t for _, t in distiller_kwargs.get("feature_pairs", ())))
        distiller_kwargs["cache"] = TeacherOutputCache.compute(
            teacher, names, cache_dataset, storage=cache, device=device, **dict(cache_options or {}))
    return Distiller(student, teacher, **distiller_kwargs)
