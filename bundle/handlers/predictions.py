"""Writes every input's prediction (or why it has none) to ``predictions.csv`` and ``predictions.json``."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..thresholds import class_thresholds, positive_classes
from .metrics_writer import write_json_atomic, write_text_atomic

__all__ = ["PredictionWriter"]


class PredictionWriter:
    """Collect per-image probabilities during an inference run and write them at its end.

    Reads, per sample, ``batch[filename_key]`` (the input path), ``batch[error_key]``
    (``""`` or the loader's problem; see ``LoadCXRd(on_error="record")``) and
    ``output["pred"]`` (probabilities: the inference postprocessing applies the
    sigmoid / softmax). Expects decollated batches (``decollate=True``).

    Files (written atomically when the run completes):

    * ``predictions.csv``: ``image, status, predicted, <class 1>, <class 2>, ..., error``
    * ``predictions.json``: ``[{"image", "status", "predicted", "probabilities": {class: p}, "error"}]``

    ``predicted`` is the arg-max class (multi-class) or the classes at or above
    their threshold joined by ``;`` (multi-label). Unreadable inputs have status
    ``error``, empty probabilities and the problem in ``error``.

    Args:
        output_dir: folder of the two files.
        class_names: one name per output channel.
        task: ``"multilabel"`` or ``"multiclass"``.
        threshold: multi-label decision threshold: one for every class, a list in class order, or
            ``{class: threshold}`` (``configs/inference.json``: the checkpoint's own, chosen on the
            validation split, :func:`bundle.thresholds.checkpoint_thresholds`).
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: list[str], task: str = "multilabel",
                 threshold: float | Sequence[float] | Mapping[str, float] = 0.5, filename_key: str = "filename",
                 error_key: str = "error") -> None:
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
        self.output_dir = Path(output_dir)
        self.class_names, self.task = list(class_names), task
        self.thresholds = class_thresholds(threshold, self.class_names)
        self.filename_key, self.error_key = filename_key, error_key
        self.rows: list[dict[str, Any]] = []

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "predictions.csv"

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def bad_inputs(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == "error"]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def predicted(self, probabilities: list[float]) -> list[str]:
        if self.task == "multiclass":
            return [self.class_names[max(range(len(probabilities)), key=probabilities.__getitem__)]]
        return positive_classes(probabilities, self.class_names, self.thresholds)

    def collect(self, engine: Engine) -> None:
        for sample, output in zip(engine.state.batch, engine.state.output):
            error = str(sample.get(self.error_key) or "")
            probabilities = None if error else torch.as_tensor(output["pred"]).detach().float().cpu().reshape(-1).tolist()
            self.add(str(sample.get(self.filename_key, "")), probabilities, error)

    def add(self, image: str, probabilities: list[float] | None, error: str = "") -> None:
        """One row: the image's class probabilities, or (``probabilities`` None) why it has none."""
        if error or probabilities is None:
            error = error[len(image) + 2:] if error.startswith(f"{image}: ") else error  # the row names the file
            self.rows.append({"image": image, "status": "error", "predicted": [], "probabilities": {},
                              "error": error})
            return
        if len(probabilities) != len(self.class_names):
            raise ValueError(f"the network gives {len(probabilities)} outputs for {len(self.class_names)} "
                             f"class names {self.class_names}")
        self.rows.append({"image": image, "status": "ok", "predicted": self.predicted(probabilities),
                          "probabilities": dict(zip(self.class_names, probabilities)), "error": ""})

    def write(self, engine: Engine | None = None) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image", "status", "predicted", *self.class_names, "error"])
        for row in self.rows:
            # 9 significant digits: the file is also a recorded teacher (bundle.distill.recorded), whose logits
            # are log(p / (1 - p)); fixed decimals would round small probabilities to 0
            probabilities = [f"{row['probabilities'][c]:.9g}" if row["probabilities"] else "" for c in self.class_names]
            writer.writerow([row["image"], row["status"], ";".join(row["predicted"]), *probabilities, row["error"]])
        write_text_atomic(self.csv_path, buffer.getvalue())
        write_json_atomic(self.output_dir / "predictions.json", self.rows)
