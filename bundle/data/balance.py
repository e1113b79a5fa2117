"""Class imbalance: re-sampling (as in the paper's COVID study) or loss weights, chosen in the config.

Bandyopadhyay et al. balance normal / pneumonia / COVID-19 by under- and over-sampling.
Both are epoch samplers here, so every epoch draws a fresh balanced set:

* ``"oversample"``: ``WeightedRandomSampler`` with replacement, each record weighted by
  ``1 / count(its class)``; an epoch has as many draws as the data set has records.
* ``"undersample"``: the same weights without replacement, ``C x count(rarest class)``
  draws per epoch, so the majority classes are cut down to the rarest one's size.

For multi-label data a record's class is its rarest positive finding (or "no finding").
``balanced_class_weights`` gives loss weights instead: ``N / (C * count_c)`` per class
for multi-class cross-entropy, and ``negatives / positives`` per finding (BCE's
``pos_weight``) for multi-label, over known labels only.

Config example::

    "sampling": "oversample",
    "train#sampler": "$bundle.data.balanced_sampler(@data#splits.train, @data#task, @sampling, @seed)"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["SAMPLING_MODES", "balanced_sampler", "balanced_class_weights", "record_classes"]

SAMPLING_MODES = ("none", "oversample", "undersample")


def record_classes(records: Sequence[dict[str, Any]], task: str) -> np.ndarray:
    """One class index per record: the argmax (multi-class), or the rarest positive finding
    (multi-label; ``C`` stands for "no finding")."""
    labels = np.asarray([r["label"] for r in records], dtype=np.float64)
    masks = np.asarray([r.get("label_mask", [1.0] * labels.shape[1]) for r in records], dtype=np.float64)
    if task == "multiclass":
        return labels.argmax(axis=1)
    positives = labels * masks
    prevalence = positives.sum(axis=0)
    rarity = np.where(positives > 0, prevalence[None, :], np.inf)
    return np.where(positives.any(axis=1), rarity.argmin(axis=1), labels.shape[1])


def balanced_sampler(
    records: Sequence[dict[str, Any]], task: str, mode: str = "none", seed: int = 0
) -> WeightedRandomSampler | None:
    """A class-balancing epoch sampler, or None for ``mode="none"`` (plain shuffling)."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if mode == "none" or not records:
        return None
    classes = record_classes(records, task)
    counts = np.bincount(classes)
    weights = 1.0 / counts[classes]
    generator = torch.Generator().manual_seed(int(seed))
    if mode == "oversample":
        return WeightedRandomSampler(weights.tolist(), num_samples=len(records), replacement=True, generator=generator)
    present = counts[counts > 0]
    return WeightedRandomSampler(weights.tolist(), num_samples=int(present.min() * len(present)), replacement=False,
                                 generator=generator)


def balanced_class_weights(records: Sequence[dict[str, Any]], task: str) -> list[float]:
    """Inverse-frequency loss weights from the training records (see the module docstring)."""
    labels = np.asarray([r["label"] for r in records], dtype=np.float64)
    masks = np.asarray([r.get("label_mask", [1.0] * labels.shape[1]) for r in records], dtype=np.float64)
    if task == "multiclass":
        counts = np.bincount(labels.argmax(axis=1), minlength=labels.shape[1]).astype(np.float64)
        return (len(labels) / (labels.shape[1] * np.maximum(counts, 1.0))).tolist()
    positives = (labels * masks).sum(axis=0)
    negatives = ((1 - labels) * masks).sum(axis=0)
    return (negatives / np.maximum(positives, 1.0)).tolist()
