"""What the bundle's MLflow tracking settings (``configs/mlflow.json``) compute.

``python -m monai.bundle run training --config_file configs/student.json --tracking configs/mlflow.json``
is MONAI's supported way to track a bundle: ``--tracking <file>`` reads a settings file shaped like
``monai.bundle.utils.DEFAULT_MLFLOW_SETTINGS`` and appends its ``MLFlowHandler`` configs to
``train#handlers`` and ``validate#handlers``. MONAI's built-in settings (``--tracking mlflow``) log
only ``max_epochs`` and ``epoch_length`` as parameters and read the loss from a decollated output
(a list of dicts), which this trainer does not produce; the bundle's settings give the trainer's
handler

* ``experiment_param``: the parameters people compare runs by (:func:`flatten_params` of the
  settings' ``tracking_params``: stage, data set, image size, learning rate, temperature, loss
  weights, ...);
* ``output_transform``: :func:`bundle.handlers.loss_and_terms`, so every iteration logs
  ``train_loss`` (the total) and ``loss/<term>`` for every named loss term (the names TensorBoard
  shows too); epoch means arrive as ``loss_mean/<term>`` metrics (:class:`~bundle.handlers.LossTermMeans`);
* ``artifacts``: :func:`tracking_artifacts`, the run's result files and the executed config that
  MONAI saved in ``output_dir`` (MONAI's own reference to that file breaks when ``--output_dir`` is
  a plain path rather than an expression).

The stage configs name the experiment (``experiment_name``: ``cxr-distill``) and the run
(``run_name``: :func:`tracking_run_name`); MONAI's trainer and validator handlers find each
other's run by that name, so one run holds the losses and the validation metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["flatten_params", "tracking_artifacts", "tracking_run_name"]


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


def tracking_artifacts(output_dir: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """``output_dir/<name>`` for each name, and the newest executed config (``config_<time>.json``) that
    MONAI's ``--tracking`` wrote there. Files missing when the run ends are skipped by the tracker."""
    folder = Path(output_dir)
    files = [str(folder / name) for name in names]
    configs = sorted(folder.glob("config_*.json"), key=os.path.getmtime)
    return files + [str(configs[-1])] if configs else files
