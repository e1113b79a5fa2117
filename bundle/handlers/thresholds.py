"""Chooses the best model's per-class decision thresholds on the validation outputs that made it best."""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events

from ..thresholds import THRESHOLD_RULES, choose_thresholds, thresholds_path, write_thresholds_file

__all__ = ["DecisionThresholds"]

logger = logging.getLogger(__name__)


class DecisionThresholds:
    """Validator handler: each time the best model is saved, choose its thresholds and write them beside it.

    Attach it to the validator after the :class:`~bundle.handlers.ModelSaver` of the best model. When that
    saver has just saved (its ``best_epoch`` is this validation's epoch), the thresholds are chosen by
    :func:`bundle.thresholds.choose_thresholds` on this validation's labels and probabilities (the key
    metric's, :class:`~bundle.metrics.ClassificationMetrics`) and written to
    ``<checkpoint stem>.thresholds.json``; ``engine.state.decision_thresholds`` carries them to
    :class:`~bundle.handlers.MetricsJSONWriter` (``metrics.json``'s ``thresholds``). So the file always
    describes the saved model, also after a resume, and the thresholds cost no extra pass over the data.
    Multi-class tasks (arg-max) and ``rule="none"`` write nothing.

    Args:
        best_model: the :class:`~bundle.handlers.ModelSaver` of the best model.
        task: ``"multilabel"`` or ``"multiclass"``.
        rule: ``"f1"``, ``"youden"`` or ``"none"`` (config id ``threshold_rule``).
        min_sensitivity: only thresholds with at least this validation sensitivity (config id
            ``min_sensitivity``; None: any).

    Config example (``validate#handlers``, after ``@validate#best_model``)::

        {"_target_": "bundle.handlers.DecisionThresholds", "best_model": "@validate#best_model",
         "task": "@data#task", "rule": "@threshold_rule", "min_sensitivity": "@min_sensitivity"}
    """

    def __init__(self, best_model: Any, task: str, rule: str = "f1", min_sensitivity: float | None = None) -> None:
        if rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {rule!r}")
        if min_sensitivity is not None and not 0.0 <= float(min_sensitivity) <= 1.0:
            raise ValueError(f"min_sensitivity must be in [0, 1], got {min_sensitivity!r}")
        self.best_model, self.task, self.rule = best_model, task, rule
        self.min_sensitivity = None if min_sensitivity is None else float(min_sensitivity)
        self.enabled = task == "multilabel" and rule != "none"

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.best_model.best_epoch != engine.state.epoch or not self.best_model.path.is_file():
            return
        from ..metrics import MultiTaskMetrics, probabilities

        metric = getattr(engine.state, "classification_metric", None)
        if metric is None or isinstance(metric, MultiTaskMetrics):  # a two-head ViT: not chosen (yet)
            return

        logits, labels, mask = metric.outputs()
        chosen = choose_thresholds(labels, probabilities(logits, metric.task), mask, metric.class_names, self.rule,
                                   self.min_sensitivity)
        path = write_thresholds_file(self.best_model.path, chosen, self.rule, self.min_sensitivity,
                                     epoch=int(engine.state.epoch))
        engine.state.decision_thresholds = {"rule": self.rule, "min_sensitivity": self.min_sensitivity,
                                            "file": str(path),
                                            "thresholds": {n: e["threshold"] for n, e in chosen.items()}}
        kept = [n for n, e in chosen.items() if "note" in e]
        logger.info("decision thresholds (%s) of %s written to %s%s", self.rule, self.best_model.path,
                    thresholds_path(self.best_model.path),
                    f"; {len(kept)} class(es) kept 0.5 (no positive or no negative validation image): "
                    f"{', '.join(kept)}" if kept else "")
