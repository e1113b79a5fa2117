"""Per-epoch seeding: an epoch's randomness depends only on (seed, epoch).

Shuffling, the balanced sampler, augmentation and dropout all draw random numbers,
and their generators advance from epoch to epoch. Reseeding them all at the start of
every epoch from ``(seed, epoch)`` makes each epoch reproducible on its own, so a run
resumed after epoch ``k`` (see :class:`~bundle.handlers.ResumeCheckpoint`) repeats
exactly what the uninterrupted run did from epoch ``k + 1``, without storing random
states in the checkpoint.

What it seeds: Python's, NumPy's and PyTorch's global generators
(``monai.utils.set_determinism``, which also selects deterministic cuDNN
algorithms), the MONAI random transforms of the dataset (``monai.data.utils.set_rnd``)
and a sampler's own ``generator``. Data-loader worker processes are seeded by
PyTorch from the main process when each epoch's iterator is created; with
``num_workers > 0`` that happens before this handler runs, so augmentations inside
workers are reproducible run to run but not across a resume.

Config example (``train#handlers``)::

    {"_target_": "bundle.handlers.SeedEachEpoch", "seed": "@seed",
     "dataset": "@train#dataset", "sampler": "@train#sampler"}
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism

__all__ = ["SeedEachEpoch", "epoch_seed"]

MAX_SEED = 2**31 - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for each (seed, epoch), far apart for neighbouring seeds."""
    return (int(seed) * 100_003 + int(epoch) * 7_919) % MAX_SEED


class SeedEachEpoch:
    """At ``EPOCH_STARTED``, seed every random generator of training from ``(seed, epoch)``.

    Args:
        seed: the run's seed.
        dataset: the training dataset (its MONAI random transforms are reseeded).
        sampler: a sampler with a ``generator`` (e.g. the balanced sampler), or None.
    """

    def __init__(self, seed: int, dataset: Any = None, sampler: Any = None) -> None:
        self.seed, self.dataset, self.sampler = int(seed), dataset, sampler

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = epoch_seed(self.seed, engine.state.epoch)
        set_determinism(seed=seed)
        if self.dataset is not None:
            set_rnd(self.dataset, seed)
        generator = getattr(self.sampler, "generator", None)
        if generator is not None:
            generator.manual_seed(seed)
