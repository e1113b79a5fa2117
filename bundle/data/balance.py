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

With ``distributed=True`` (``configs/multi_gpu_train.json``) every process makes the
same draws from a generator seeded alike and keeps every ``world_size``-th of them
(:class:`DistributedBalancedSampler`), so the processes together see exactly what one
process would; without re-sampling it is PyTorch's ``DistributedSampler``.

Config example::

    "sampling": "oversample",
    "train#sampler": "$bundle.data.balanced_sampler(@data#splits.train, @data#task, @sampling, @seed)"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler, WeightedRandomSampler

from ..distributed import rank, world_size

__all__ = ["SAMPLING_MODES", "balanced_sampler", "balanced_class_weights", "record_classes",
           "DistributedBalancedSampler"]

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


class DistributedBalancedSampler(Sampler[int]):
    """A weighted draw made identically by every process; each keeps every ``num_replicas``-th index.

    The draw of one epoch is a function of the generator's state, which
    :class:`~bundle.handlers.SeedEachEpoch` sets from ``(seed, epoch)`` on every process.
    Draws past the last multiple of ``num_replicas`` are dropped so that all processes
    run the same number of iterations (DDP needs that).
    """

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_samples, self.replacement = int(num_samples), bool(replacement)
        self.num_replicas = int(num_replicas or world_size())
        self.rank = int(_rank() if rank is None else rank)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __iter__(self):
        draws = torch.multinomial(self.weights, self.num_samples, self.replacement, generator=self.generator)
        return iter(draws[self.rank : len(self) * self.num_replicas : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples // self.num_replicas


_rank = rank


def balanced_sampler(
    records: Sequence[dict[str, Any]], task: str, mode: str = "none", seed: int = 0, distributed: bool = False
) -> Sampler[int] | None:
    """A class-balancing epoch sampler, or None for ``mode="none"`` in one process (plain shuffling).

    ``distributed``: this process's share of each epoch in a multi-process run.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if mode == "none" or not records:
        if distributed:  # MONAI's workflow calls set_epoch, so each epoch shuffles anew
            return DistributedSampler(records, shuffle=True, seed=int(seed))
        return None
    classes = record_classes(records, task)
    counts = np.bincount(classes)
    weights = 1.0 / counts[classes]
    present = counts[counts > 0]
    replacement = mode == "oversample"
    num_samples = len(records) if replacement else int(present.min() * len(present))
    if distributed:
        return DistributedBalancedSampler(weights.tolist(), num_samples, replacement, seed)
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(weights.tolist(), num_samples=num_samples, replacement=replacement,
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
