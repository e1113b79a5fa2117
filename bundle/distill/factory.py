"""Builders the stage configs call: the teacher source and the stage's distiller, from config ids.

A stage distils when it is given a teacher: a trained stage's checkpoint (``teacher_network``
in callable mode, built and loaded only then) or a recorded teacher's predictions file
(``teacher_predictions``). Without either it trains on hard labels alone (:class:`NoTeacher`),
through the same contract, so the trainer has one code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..data.errors import CXRDataError
from .base import Distiller, NoTeacher
from .cache import TeacherOutputCache
from .mlcak import ATTENTION, MLCAKDistiller
from .takd import TAKDDistiller
from .teachers import FrozenTeacher, TeacherSource, load_frozen

__all__ = ["make_teacher", "make_distiller", "make_mlcak_distiller"]


def make_teacher(
    teacher_network: Callable[[], nn.Module] | None = None,
    checkpoint: str | os.PathLike | None = None,
    role: str | None = "teacher",
    device: str | torch.device = "cpu",
    feature_names: Sequence[str] = (),
    input_shape: Sequence[int] = (1, 224, 224),
    check_view: bool = False,
    maps: Mapping[str, Callable[[nn.Module], torch.Tensor]] | None = None,
    cache: str | None = None,
    cache_dataset: Any = None,
    cache_options: Mapping[str, Any] | None = None,
    predictions: str | os.PathLike | None = None,
    predictions_options: Mapping[str, Any] | None = None,
    train_records: Sequence[Mapping[str, Any]] | None = None,
    stage: str | None = None,
) -> TeacherSource | None:
    """The teacher source of a stage, or None when it has no teacher.

    * ``predictions``: a recorded teacher (:meth:`TeacherOutputCache.from_predictions` over
      ``train_records``; ``predictions_options``: ``class_names``, ``task``, ``values``, ``missing``,
      ``dataset_dir``);
    * ``teacher_network`` + ``checkpoint``: the frozen network (:func:`load_frozen`), run on each
      batch (:class:`FrozenTeacher`), or with ``cache`` (``"memory"``/``"disk"``) run once over
      ``cache_dataset`` (the training list under deterministic preprocessing;
      ``cache_options``: ``directory``, ``batch_size``, ``dtype``, ``num_workers``, ``budget``).
    """
    if predictions is not None:
        if teacher_network is not None:
            raise ValueError(f"both a teacher checkpoint ({checkpoint}) and teacher_predictions ({predictions}) are "
                             f"given: distil from one of them")
        if train_records is None:
            raise ValueError("teacher_predictions need the training records (train_records)")
        return TeacherOutputCache.from_predictions(predictions, train_records, **dict(predictions_options or {}))
    if teacher_network is None:
        return None
    network = load_frozen(teacher_network(), checkpoint, device, role or "teacher", stage)
    live = FrozenTeacher(network, feature_names, input_shape, check_view, maps)
    if not cache:
        return live
    if maps:
        raise ValueError("a teacher cache keeps hooked feature maps only (not maps computed after the forward pass)")
    if cache_dataset is None:
        raise ValueError("teacher cache requested without a cache_dataset")
    live.release()  # the cache answers for the teacher from now on: its weights go with `live`
    return TeacherOutputCache.compute(network, list(feature_names), cache_dataset, storage=cache, device=device,
                                      **dict(cache_options or {}))


def make_distiller(
    student: nn.Module,
    hard_loss: nn.Module,
    teacher_network: Callable[[], nn.Module] | None = None,
    checkpoint: str | os.PathLike | None = None,
    role: str | None = "teacher",
    device: str | torch.device = "cpu",
    cache: str | None = None,
    cache_dataset: Any = None,
    cache_options: Mapping[str, Any] | None = None,
    teacher_predictions: str | os.PathLike | None = None,
    predictions_options: Mapping[str, Any] | None = None,
    train_records: Sequence[Mapping[str, Any]] | None = None,
    input_shape: Sequence[int] = (1, 224, 224),
    teacher_input_shape: Sequence[int] | None = None,
    feature_pairs: Sequence[Sequence[str]] = (),
    **distiller_kwargs: Any,
) -> Distiller:
    """The TAKD stage's distiller (:class:`TAKDDistiller`), or :class:`NoTeacher` without a teacher.

    Stage configs declare their teacher network in callable mode (``"_mode_": "callable"``), so
    that it is built, loaded from ``checkpoint`` and frozen only when the stage distils.
    ``distiller_kwargs``: ``soft_loss``, ``feature_loss``, ``weights`` of :class:`TAKDDistiller`.
    """
    weights = dict(distiller_kwargs.get("weights") or {})
    if teacher_predictions is not None and distiller_kwargs.get("feature_loss") is not None and weights.get("feature"):
        raise CXRDataError(
            teacher_predictions, f"recorded predictions hold logits only, and the feature-map term "
            f"(loss_weights#feature = {weights['feature']}) needs a live teacher network: set loss_weights#feature "
            f"to 0 (--loss_weights#feature 0), or distil from a teacher checkpoint")
    shape = tuple(int(v) for v in input_shape)
    teacher_shape = shape if teacher_input_shape is None else tuple(int(v) for v in teacher_input_shape)
    feature_names = list(dict.fromkeys(t for _, t in feature_pairs))
    if cache and not (weights.get("feature", 0.0) and distiller_kwargs.get("feature_loss") is not None):
        feature_names = []  # the feature term is off: a cache keeps the logits alone
    teacher = make_teacher(
        teacher_network, checkpoint, role, device, feature_names, teacher_shape,
        check_view=teacher_shape != shape, cache=cache, cache_dataset=cache_dataset, cache_options=cache_options,
        predictions=teacher_predictions, predictions_options=predictions_options, train_records=train_records)
    if teacher is None:
        return NoTeacher(student, hard_loss)
    return TAKDDistiller(student, hard_loss, teacher, feature_pairs=feature_pairs, input_shape=shape,
                         **distiller_kwargs)


def make_mlcak_distiller(
    student: nn.Module,
    hard_loss: nn.Module,
    teacher_network: Callable[[], nn.Module] | None,
    checkpoint: str | os.PathLike | None,
    loss: Any,
    student_layout: Any,
    teacher_layout: Any,
    attention_layers: str | int | list[int] = "all",
    hard_weight: float = 1.0,
    device: str | torch.device = "cpu",
    teacher_predictions: str | os.PathLike | None = None,
    predictions_options: Mapping[str, Any] | None = None,
    train_records: Sequence[Mapping[str, Any]] | None = None,
) -> Distiller:
    """The ViT student's :class:`MLCAKDistiller`, or :class:`NoTeacher` (the student without distillation).

    ``teacher_network`` is the teacher's network in callable mode (built, loaded from ``checkpoint``
    and frozen only when the student distils; a missing checkpoint is an error naming
    the ViT teacher stage); its source gives the mean attention map over ``attention_layers``.
    ``teacher_predictions`` distils the logit terms from a recorded teacher instead.
    """
    if teacher_predictions is not None and loss.gamma:
        raise CXRDataError(
            teacher_predictions, f"recorded predictions hold logits only, and MLCAK's attention term "
            f"(loss_weights#attention = {loss.gamma}) needs a live ViT teacher: set loss_weights#attention to 0 "
            f"(--loss_weights#attention 0), or distil from a ViT teacher checkpoint")
    if teacher_network is not None and teacher_predictions is None:
        network = load_frozen(teacher_network(), checkpoint, device, "teacher", "vit_teacher")
        size = int(network.image_size)
        maps = {ATTENTION: lambda net: net.attention_map(attention_layers)} if loss.gamma else None
        teacher: TeacherSource | None = FrozenTeacher(network, (), (1, size, size), check_view=True, maps=maps)
    else:
        teacher = make_teacher(teacher_network, checkpoint, predictions=teacher_predictions,
                               predictions_options=predictions_options, train_records=train_records)
    if teacher is None:
        return NoTeacher(student, hard_loss)
    return MLCAKDistiller(student, hard_loss, teacher, loss, student_layout, teacher_layout, attention_layers,
                          hard_weight)
