"""The named loss terms of an iteration, as scalars and as epoch means.

The trainer leaves every weighted term of an iteration in ``engine.state.output["loss_terms"]``
(``hard``, ``soft``, ``feature/<layer>``, ...). Two things read them, each the library's own:

* :func:`loss_and_terms` is an ``output_transform`` for MONAI's ``TensorBoardStatsHandler`` (and
  ``MLFlowHandler``): ``{"train_loss": total, "loss/<term>": value}``, one scalar each per iteration;
* :class:`LossTermMeans` is an Ignite metric: the mean of every term over the epoch so far, in
  ``engine.state.metrics["loss_mean/<term>"]``, where MONAI's ``StatsHandler`` (the per-epoch log
  line), ``TensorBoardStatsHandler`` and ``MLFlowHandler`` find it at the end of the epoch.

Config example (``train#handlers``)::

    {"_target_": "bundle.handlers.LossTermMeans"},
    {"_target_": "TensorBoardStatsHandler", "summary_writer": "@tensorboard_writer",
     "output_transform": "$bundle.handlers.loss_and_terms"},
    {"_target_": "StatsHandler", "iteration_log": false, "name": null}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import SingleEpochRunningBatchWise

from ..keys import Keys

__all__ = ["LossTermMeans", "loss_and_terms", "loss_terms", "terms_and_weights"]


def loss_terms(output: Mapping[str, Any]) -> dict[str, float]:
    """``{term: value}`` of one iteration (empty when the output has none, e.g. an all-unreadable batch)."""
    return dict(output.get(Keys.LOSS_TERMS) or {}) if isinstance(output, Mapping) else {}


def loss_and_terms(output: Mapping[str, Any]) -> dict[str, float]:
    """``{"train_loss": total, "loss/<term>": value, ...}`` from this trainer's iteration output: the names
    TensorBoard and MLflow show."""
    logged = {"train_loss": float(output[Keys.LOSS].detach())}
    logged.update({f"loss/{name}": float(value) for name, value in loss_terms(output).items()})
    return logged


def terms_and_weights(output: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """``({term: value}, {term: weight})`` of one iteration: the weights are the samples a term's batch
    value is a mean over, where that is not the whole batch (``loss_term_weights``: the soft term of a
    recorded teacher that covers part of the data)."""
    if not isinstance(output, Mapping):
        return {}, {}
    return loss_terms(output), dict(output.get(Keys.LOSS_TERM_WEIGHTS) or {})


class LossTermMeans(Metric):
    """Mean of every named loss term over the epoch so far: ``engine.state.metrics["loss_mean/<term>"]``.

    An Ignite metric whose value is a mapping (one entry per term; the terms are known only once
    the trainer has run, so one ``Average`` per term cannot be declared beforehand). It is reset when
    an epoch starts and recomputed after every iteration (Ignite's ``SingleEpochRunningBatchWise``
    usage), so at ``EPOCH_COMPLETED`` it holds the epoch's means whatever the order of the handlers
    that read them. Each term is averaged over the iterations that produced it, each iteration
    weighted by the samples its value is a mean over when the trainer says so (``loss_term_weights``):
    the soft term of a recorded teacher that covers part of the training images is a mean over the
    covered images of each batch, so its epoch mean counts covered images only (a batch without
    one adds nothing).

    Args:
        prefix: the metric names are ``<prefix><term>``.
        output_transform: iteration output -> ``({term: value},)`` or ``({term: value}, {term: weight})``
            (default :func:`terms_and_weights` of the trainer's output).

    ``attach(engine)`` without a name, as MONAI attaches handlers of a config's handler list.
    """

    required_output_keys = None

    def __init__(self, prefix: str = "loss_mean/", output_transform: Callable = terms_and_weights) -> None:
        self.prefix = prefix
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, float] = {}

    def update(self, output: tuple[Mapping[str, float], ...]) -> None:
        terms = output[0] if output else None
        weights = (output[1] if len(output) > 1 else None) or {}
        for name, value in (terms or {}).items():
            weight = float(weights.get(name, 1.0))
            self._sums[name] = self._sums.get(name, 0.0) + weight * float(value)
            self._counts[name] = self._counts.get(name, 0.0) + weight

    def compute(self) -> dict[str, float]:
        return {f"{self.prefix}{name}": total / self._counts[name] for name, total in self._sums.items()
                if self._counts[name] > 0}

    def completed(self, engine: Engine, name: str) -> None:
        engine.state.metrics.update(self.compute())  # flat names only: trackers log every value as a scalar

    def attach(self, engine: Engine, name: str = "loss_mean", usage: Any = None) -> None:  # type: ignore[override]
        super().attach(engine, name, usage or SingleEpochRunningBatchWise())
