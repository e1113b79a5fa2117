"""Writes an evaluator's metrics to ``metrics.json`` and a readable report, atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from .checkpoint import write_atomic
from .intervals import format_intervals

__all__ = ["MetricsJSONWriter", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text through a temporary file and a rename (:func:`~bundle.handlers.checkpoint.write_atomic`)."""
    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, content: Any) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(content, indent=2, sort_keys=True, default=str))


def _jsonable(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


class MetricsJSONWriter:
    """At the end of each evaluation, write ``engine.state.metrics`` to ``<output_dir>/<filename>``
    and the text classification report to ``<output_dir>/<report_filename>`` (with the bootstrap
    intervals of :class:`~bundle.handlers.ConfidenceIntervals` when the evaluation has them).

    Multi-label: ``thresholds_used`` (the decision threshold of each class behind precision, recall, F1 and
    the 2 x 2 ``confusion_matrix``), and where those are not 0.5, ``confusion_matrix_compare`` at
    ``compare_threshold`` (0.5; its scalars are ``at0.5/...``); in training, the thresholds chosen for the
    best model (``thresholds``, ``threshold_rule``, ``min_sensitivity``, ``thresholds_file``:
    :class:`~bundle.handlers.DecisionThresholds`).

    Args:
        output_dir: folder for the files.
        filename: JSON file name.
        report_filename: text report name (None: no text report).
        only_best: write only when the evaluator's key metric improved (a validator
            inside training), so the files always describe the best checkpoint.
        extra: constant fields added to the JSON (e.g. the split name).
    """

    def __init__(
        self,
        output_dir: str,
        filename: str = "metrics.json",
        report_filename: str | None = "report.txt",
        only_best: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.filename, self.report_filename = filename, report_filename
        self.only_best, self.extra = only_best, dict(extra or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        if self.only_best and getattr(state, "best_metric_epoch", None) not in (None, -1, state.epoch):
            return
        content = {name: _jsonable(v) for name, v in state.metrics.items() if isinstance(v, (int, float))}
        report = getattr(state, "classification_report", None) or {}
        content.update(self.extra)
        content["confusion_matrix"] = report.get("confusion_matrix")
        content["num_samples"] = report.get("num_samples")
        if report.get("thresholds") is not None:  # multi-label: the decision threshold of each class
            content["thresholds_used"] = report["thresholds"]
        if report.get("confusion_matrix_compare") is not None:  # the same tables at 0.5, for comparison
            content["compare_threshold"] = report["compare_threshold"]
            content["confusion_matrix_compare"] = report["confusion_matrix_compare"]
        chosen = getattr(state, "decision_thresholds", None)  # bundle.handlers.DecisionThresholds (training)
        if chosen:
            content["thresholds"] = chosen["thresholds"]
            content["threshold_rule"] = chosen["rule"]
            content["min_sensitivity"] = chosen["min_sensitivity"]
            # relative to metrics.json: a run folder that is moved or compared with another stays the same
            content["thresholds_file"] = os.path.relpath(chosen["file"], self.output_dir)
        if self.only_best:
            content["epoch"] = state.epoch  # a validator's epoch is its trainer's
        write_json_atomic(self.output_dir / self.filename, content)
        text = report.get("report") or ""
        intervals = getattr(state, "confidence_intervals", None)  # bundle.handlers.ConfidenceIntervals
        if intervals:
            text += "\n" + format_intervals(intervals, state.metrics)
        if self.report_filename and text:
            write_text_atomic(self.output_dir / self.report_filename, text)
