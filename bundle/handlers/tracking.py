"""Fits the ``MLFlowHandler`` that ``--tracking mlflow`` adds to this trainer: parameters and loss terms.

``python -m monai.bundle run training --config_file configs/student.json --tracking mlflow``
makes MONAI append an ``MLFlowHandler`` to ``train#handlers``. MONAI's default settings
log only ``max_epochs`` and ``epoch_length`` as parameters (and the executed config as an
artifact), and read the loss from a decollated output (a list of dicts), which this
trainer does not produce. This handler, listed before the tracker, gives it

* ``experiment_param``: the parameters people compare runs by (stage, data set, image
  size, learning rate, temperature, loss weights, ...);
* ``artifacts``: the run's result files (best model, metrics, report, log) and the
  executed config that MONAI saved in ``output_dir`` (MONAI's own reference to that file
  breaks when ``--output_dir`` is a plain path rather than an expression);
* an ``output_transform`` giving, every iteration, ``train_loss`` (the total) and
  ``loss/<term>`` for every named loss term (``hard``, ``soft``, ``feature/<layer>``),
  the names TensorBoard shows too.

Epoch means of the terms reach it as ``loss_mean/<term>`` metrics
(:class:`~bundle.handlers.LossTermsLogger`). Without tracking it does nothing.

The stage configs name the experiment (``experiment_name``: ``cxr-distill``) and the run
(``run_name``: :func:`tracking_run_name`); MONAI's trainer and validator trackers find
each other's run by that name, so one run holds the losses and the validation metrics.

Config example (``train#handlers``)::

    {"_target_": "bundle.handlers.TrackingSetup",
     "params": {"stage": "@stage", "learning_rate": "@learning_rate", "loss_weights": "@loss_weights"}}
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from ..keys import Keys

__all__ = ["TrackingSetup", "flatten_params", "loss_and_terms", "tracking_run_name"]


def tracking_run_name(stage: str) -> str:
    """``student-20261123-141500``: the stage and when the run started."""
    return f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"loss_weights": {"soft": 1}}`` -> ``{"loss_weights.soft": "1"}`` (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def loss_and_terms(output: Mapping[str, Any]) -> dict[str, float]:
    """``{"train_loss": total, "loss/<term>": value, ...}`` from this trainer's iteration output."""
    logged = {"train_loss": float(output[Keys.LOSS].detach())}
    logged.update({f"loss/{name}": float(value) for name, value in output.get(Keys.LOSS_TERMS, {}).items()})
    return logged


class TrackingSetup:
    """At ``STARTED`` (before the trackers start), set up every MLflow handler of the trainer.

    Args:
        params: name -> value; nested mappings become ``parent.child`` names.
        artifacts: files to log when training completes (missing ones are skipped).
        output_dir: where MONAI saved the executed config (``config_<time>.json``); the
            newest one is logged too.
    """

    def __init__(self, params: Mapping[str, Any], artifacts: Sequence[str | os.PathLike] = (),
                 output_dir: str | os.PathLike | None = None) -> None:
        self.params = flatten_params(params)
        self.artifacts = [str(a) for a in artifacts]
        self.output_dir = output_dir
        self.trackers: list[Any] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        from monai.handlers import MLFlowHandler

        # Ignite has no public listing of an event's handlers; MONAI appends the tracker
        # after the bundle's own handlers, so it is attached by now and starts after us.
        handlers = engine._event_handlers.get(Events.STARTED, [])  # noqa: SLF001
        self.trackers = [h[0].__self__ for h in handlers if isinstance(getattr(h[0], "__self__", None), MLFlowHandler)]
        if not self.trackers:
            return
        artifacts = list(self.artifacts)
        configs = sorted(Path(self.output_dir).glob("config_*.json"), key=os.path.getmtime) if self.output_dir else []
        if configs:
            artifacts.append(str(configs[-1]))
        for tracker in self.trackers:
            tracker.experiment_param = {**self.params, **(tracker.experiment_param or {})}
            tracker.output_transform = loss_and_terms
            tracker.artifacts = tuple(dict.fromkeys([*(a for a in tracker.artifacts if a), *artifacts]))
