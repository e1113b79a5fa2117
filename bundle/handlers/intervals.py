"""Bootstrap confidence intervals of an evaluation's metrics (test-set uncertainty)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events

from ..metrics import bootstrap_intervals

__all__ = ["ConfidenceIntervals", "format_intervals"]

logger = logging.getLogger(__name__)


def format_intervals(intervals: Mapping[str, Any], metrics: Mapping[str, float]) -> str:
    """The report section of :class:`ConfidenceIntervals`' result (``engine.state.confidence_intervals``)."""
    lines = [f"{100 * intervals['level']:g}% bootstrap confidence intervals ({intervals['resamples']} resamples of "
             f"the {intervals['num_samples']} images):"]
    lines += [f"  {key}: {metrics.get(key, float('nan')):.4f} [{low:.4f}, {high:.4f}]"
              for key, (low, high) in intervals["intervals"].items()]
    return "\n".join(lines) + "\n"


class ConfidenceIntervals:
    """At the end of an evaluation, percentile-bootstrap intervals of ``keys`` over its images.

    Needs :class:`~bundle.metrics.ClassificationMetrics` (or ``MultiTaskMetrics``) as the
    evaluator's key metric, which leaves itself in ``engine.state.classification_metric``.
    Puts ``<key>_ci_low`` and ``<key>_ci_high`` into ``engine.state.metrics`` (so
    :class:`~bundle.handlers.MetricsJSONWriter`, MLflow and TensorBoard get them) and the whole
    result in ``engine.state.confidence_intervals`` (``level``, ``resamples``, ``num_samples``,
    ``intervals``: ``{key: (low, high)}``), from which the metrics writer adds a section to the text
    report (:func:`format_intervals`). It runs when the evaluation's epoch completes, before any
    writer (they write when the run completes), so its place in the handler list does not matter.
    Cost: ``resamples`` metric computations (scalars only; on one busy CPU core, 1,000 draws took
    6 s for 624 two-class images and would take about 70 s for 14 findings over 2,000 images: lower
    ``--bootstrap_resamples`` for large multi-label test sets); a progress bar shows them on a terminal.

    Config example (``configs/evaluate.json``)::

        {"_target_": "bundle.handlers.ConfidenceIntervals", "keys": ["auc_macro", "accuracy", "f1_macro"],
         "resamples": 1000, "level": 0.95}
    """

    def __init__(self, keys: Sequence[str] = ("auc_macro", "accuracy", "f1_macro"), resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> None:
        self.keys, self.resamples, self.level, self.seed = list(keys), int(resamples), float(level), int(seed)

    def attach(self, engine: Engine) -> None:
        if self.resamples > 0:
            engine.add_event_handler(Events.STARTED, self._forget)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @staticmethod
    def _forget(engine: Engine) -> None:
        engine.state.confidence_intervals = None  # an engine run again reports only its own intervals

    def __call__(self, engine: Engine) -> None:
        metric = getattr(engine.state, "classification_metric", None)
        if metric is None:
            raise RuntimeError("ConfidenceIntervals needs bundle.metrics.ClassificationMetrics (or MultiTaskMetrics) "
                               "as the evaluator's key metric")
        num_samples = engine.state.classification_report["num_samples"]
        intervals = bootstrap_intervals(lambda rows: metric.report(rows, details=False)["scalars"], num_samples,
                                        self.keys, self.resamples, self.level, self.seed, progress=None)
        for key, (low, high) in intervals.items():
            engine.state.metrics[f"{key}_ci_low"], engine.state.metrics[f"{key}_ci_high"] = low, high
        engine.state.confidence_intervals = {"level": self.level, "resamples": self.resamples,
                                             "num_samples": num_samples, "intervals": intervals}
        logger.info(format_intervals(engine.state.confidence_intervals, engine.state.metrics)
                    .replace("\n ", "").strip())
