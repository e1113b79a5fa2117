"""Bootstrap confidence intervals of an evaluation's metrics (test-set uncertainty)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ignite.engine import Engine, Events

from ..metrics import bootstrap_intervals

__all__ = ["ConfidenceIntervals"]

logger = logging.getLogger(__name__)


class ConfidenceIntervals:
    """At the end of an evaluation, percentile-bootstrap intervals of ``keys`` over its images.

    Needs :class:`~bundle.metrics.ClassificationMetrics` (or ``MultiTaskMetrics``) as the
    evaluator's key metric, which leaves itself in ``engine.state.classification_metric``.
    Puts ``<key>_ci_low`` and ``<key>_ci_high`` into ``engine.state.metrics`` (so
    :class:`~bundle.handlers.MetricsJSONWriter`, StatsHandler and MLflow get them) and a line
    per key under the text report. Cost: ``resamples`` metric computations (scalars only; on one
    busy CPU core, 1,000 draws took 6 s for 624 two-class images and would take about 70 s for 14
    findings over 2,000 images: lower ``--bootstrap_resamples`` for large multi-label test sets).

    Config example (``configs/evaluate.json``, before the metrics writer)::

        {"_target_": "bundle.handlers.ConfidenceIntervals", "keys": ["auc_macro", "accuracy", "f1_macro"],
         "resamples": 1000, "level": 0.95}
    """

    def __init__(self, keys: Sequence[str] = ("auc_macro", "accuracy", "f1_macro"), resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> None:
        self.keys, self.resamples, self.level, self.seed = list(keys), int(resamples), float(level), int(seed)

    def attach(self, engine: Engine) -> None:
        if self.resamples > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metric = getattr(engine.state, "classification_metric", None)
        if metric is None:
            raise RuntimeError("ConfidenceIntervals needs bundle.metrics.ClassificationMetrics (or MultiTaskMetrics) "
                               "as the evaluator's key metric")
        report = engine.state.classification_report
        intervals = bootstrap_intervals(lambda rows: metric.report(rows, details=False)["scalars"],
                                        report["num_samples"], self.keys, self.resamples, self.level, self.seed)
        percent = f"{100 * self.level:g}%"
        lines = [f"\n{percent} bootstrap confidence intervals ({self.resamples} resamples of the "
                 f"{report['num_samples']} images):"]
        for key, (low, high) in intervals.items():
            engine.state.metrics[f"{key}_ci_low"], engine.state.metrics[f"{key}_ci_high"] = low, high
            lines.append(f"  {key}: {engine.state.metrics.get(key, float('nan')):.4f} [{low:.4f}, {high:.4f}]")
        report["report"] = (report.get("report") or "") + "\n".join(lines) + "\n"
        logger.info(" ".join(lines[1:]).replace("  ", " "))
