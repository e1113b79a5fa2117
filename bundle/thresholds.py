"""Per-class decision thresholds of a multi-label model: chosen on the validation split, kept with the model.

A multi-label finding is "present" when its probability reaches its class's threshold. One 0.5 for every
class suits balanced classes only: NIH's findings have 1-10 % prevalence, and a model trained on them puts
few probabilities above 0.5, so at 0.5 it flags almost nothing. At the end of training (each time the best
model is saved, on the validation outputs that made it best: :class:`bundle.handlers.DecisionThresholds`)
a threshold is chosen per class by a documented rule:

* ``"f1"`` (default): the threshold that maximises F1, the harmonic mean of precision (positive predictive
  value) and recall (sensitivity), over the class's validation probabilities. It weighs false positives
  against the finding's prevalence, which suits rare findings;
* ``"youden"``: the threshold that maximises Youden's J = sensitivity + specificity - 1 over the class's
  ROC curve (Youden 1950), i.e. the ROC point farthest above the diagonal. It ignores prevalence, so for a
  finding in 1-10 % of images it flags many more images than have it (NIH subset, 3-conv student at 32 px:
  40 % of image-finding pairs flagged on the test split against a prevalence of 9.8 %; F1: 27 %; 0.5: 0 %);
* ``"none"``: no thresholds are chosen (every class stays at 0.5).

``min_sensitivity`` (e.g. 0.9) restricts the choice to thresholds whose validation sensitivity is at least that
(a screening operating point); the rule then picks the best of those. Candidate thresholds are the
validation probabilities themselves (scikit-learn's ``roc_curve`` / ``precision_recall_curve``), so the
validation sensitivity and specificity stored beside each threshold are exactly what ``p >= threshold``
gives there. A class without a positive or a negative validation label keeps 0.5 (said in the file and
the log). Multi-class tasks keep the arg-max: no thresholds.

The thresholds are written beside the checkpoint, ``<checkpoint stem>.thresholds.json``
(``outputs/student/model.thresholds.json`` for ``model.pt``), with the checkpoint's SHA-256, the rule, the
epoch and per class the validation sensitivity, specificity, precision and F1; ``metrics.json`` repeats
them, and ``scripts/export_bundle.py`` writes them into the exported bundle's ``configs/inference.json``
(``threshold``: ``{class: threshold}``). Readers (:func:`checkpoint_thresholds`): inference
(``configs/inference.json``), evaluation (``configs/evaluate.json``), the Deploy app and MONAI Label
(through the bundle's ``inference.json``). A checkpoint without them (trained before thresholds were
chosen, or copied without its file) keeps 0.5, with a log line that says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_THRESHOLD", "THRESHOLD_RULES", "checkpoint_thresholds", "choose_thresholds", "class_thresholds",
           "describe", "file_sha256", "positive_classes", "read_thresholds_file", "thresholds_path", "write_thresholds_file"]

DEFAULT_THRESHOLD = 0.5
THRESHOLD_RULES = ("youden", "f1", "none")
logger = logging.getLogger(__name__)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the checkpoint (:func:`bundle.export.files.file_sha256`, imported when needed)."""
    from .export.files import file_sha256 as sha256

    return sha256(path)


def thresholds_path(checkpoint: str | os.PathLike) -> Path:
    """``<folder>/<stem>.thresholds.json`` of a checkpoint (``model.pt`` -> ``model.thresholds.json``)."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.thresholds.json")


def _one_class(labels: np.ndarray, probabilities: np.ndarray, rule: str,
               min_sensitivity: float | None) -> dict[str, Any]:
    """The threshold of one class and its validation operating point."""
    from sklearn.metrics import roc_curve

    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    entry: dict[str, Any] = {"positives": positives, "negatives": negatives}
    if positives == 0 or negatives == 0:
        entry.update(threshold=DEFAULT_THRESHOLD,
                     note=f"kept {DEFAULT_THRESHOLD:g}: no {'positive' if positives == 0 else 'negative'} "
                          f"validation image")
        return entry
    fpr, tpr, candidates = roc_curve(labels, probabilities, drop_intermediate=False)
    fpr, tpr, candidates = fpr[1:], tpr[1:], candidates[1:]  # the first point is "nothing positive" (infinity)
    if rule == "youden":
        score = tpr - fpr
    else:  # f1 from the counts at each candidate (predicted positive: p >= candidate)
        true_pos, false_pos = tpr * positives, fpr * negatives
        score = 2 * true_pos / np.maximum(true_pos + false_pos + positives, 1e-12)
    allowed = np.ones_like(score, dtype=bool) if min_sensitivity is None else tpr >= min_sensitivity - 1e-12
    best = int(np.flatnonzero(allowed)[np.argmax(score[allowed])])  # the highest threshold among ties
    predicted = probabilities >= candidates[best]
    true_pos = int((predicted & (labels > 0)).sum())
    flagged = int(predicted.sum())
    entry.update(threshold=float(candidates[best]), sensitivity=float(tpr[best]), specificity=float(1 - fpr[best]),
                 precision=true_pos / flagged if flagged else 0.0,
                 f1=2 * true_pos / (flagged + positives) if flagged + positives else 0.0)
    return entry


def choose_thresholds(labels: np.ndarray, probabilities: np.ndarray, mask: np.ndarray | None,
                      class_names: Sequence[str], rule: str = "f1",
                      min_sensitivity: float | None = None) -> dict[str, dict[str, Any]]:
    """Per class ``{"threshold", "sensitivity", "specificity", "precision", "f1", "positives", "negatives"}``
    chosen on ``(N, C)`` multi-label targets and probabilities (unknown labels, ``mask == 0``, left out).

    Args:
        rule: ``"f1"`` (max F1) or ``"youden"`` (max sensitivity + specificity - 1); see the module docstring.
        min_sensitivity: only thresholds whose sensitivity is at least this, in [0, 1] (None: any).
    """
    if rule not in THRESHOLD_RULES or rule == "none":
        raise ValueError(f"threshold_rule must be 'youden' or 'f1' to choose thresholds, got {rule!r}")
    if min_sensitivity is not None and not 0.0 <= float(min_sensitivity) <= 1.0:
        raise ValueError(f"min_sensitivity must be in [0, 1], got {min_sensitivity!r}")
    labels, probabilities = np.asarray(labels, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    mask = np.ones_like(labels) if mask is None else np.asarray(mask, dtype=np.float64)
    chosen = {}
    for c, name in enumerate(class_names):
        known = mask[:, c] > 0
        chosen[str(name)] = _one_class(labels[known, c].astype(int), probabilities[known, c], rule,
                                       None if min_sensitivity is None else float(min_sensitivity))
    return chosen


def write_thresholds_file(checkpoint: str | os.PathLike, per_class: Mapping[str, Mapping[str, Any]],
                          rule: str, min_sensitivity: float | None, epoch: int | None = None,
                          split: str = "validation") -> Path:
    """Write :func:`thresholds_path` of ``checkpoint`` (atomically), tied to the checkpoint by its SHA-256."""
    from .handlers.metrics_writer import write_json_atomic

    path = thresholds_path(checkpoint)
    write_json_atomic(path, {
        "checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint),
        "task": "multilabel", "class_names": list(per_class), "rule": rule, "min_sensitivity": min_sensitivity,
        "split": split, "epoch": epoch,
        "thresholds": {name: entry["threshold"] for name, entry in per_class.items()},
        "per_class": {name: dict(entry) for name, entry in per_class.items()},
    })
    return path


def read_thresholds_file(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The thresholds file of ``checkpoint`` when it exists and describes this very file (same SHA-256);
    else None, with the reason logged."""
    path = thresholds_path(checkpoint)
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("%s cannot be read (%s): decision thresholds ignored", path, error)
        return None
    if Path(checkpoint).is_file() and content.get("checkpoint_sha256") != file_sha256(checkpoint):
        logger.warning("%s was written for another %s (its SHA-256 differs: retrained or replaced since): "
                       "decision thresholds ignored", path, Path(checkpoint).name)
        return None
    return content


def checkpoint_thresholds(checkpoint: str | os.PathLike, class_names: Sequence[str], task: str = "multilabel",
                          default: float = DEFAULT_THRESHOLD) -> dict[str, float] | float:
    """The decision thresholds to use with ``checkpoint``: ``{class: threshold}`` from its thresholds file,
    else ``default`` (one number for every class) with a log line saying why. Multi-class: ``default``
    (unused: the arg-max decides), silently."""
    if task != "multilabel":
        return default
    names = [str(c) for c in class_names]
    content = read_thresholds_file(checkpoint)
    if content is None:
        logger.warning("%s has no decision thresholds (no %s: trained before thresholds were chosen, or copied "
                       "without that file): every finding is cut at %g", checkpoint,
                       thresholds_path(checkpoint).name, default)
        return default
    thresholds = content.get("thresholds") or {}
    if content.get("class_names") != names or set(thresholds) != set(names):
        logger.warning("%s is for classes %s, not %s: every finding is cut at %g", thresholds_path(checkpoint),
                       content.get("class_names"), names, default)
        return default
    logger.info("decision thresholds of %s (%s rule on the %s split%s): %s", checkpoint, content.get("rule"),
                content.get("split", "validation"),
                f", sensitivity >= {content['min_sensitivity']:g}" if content.get("min_sensitivity") else "",
                ", ".join(f"{n} {thresholds[n]:.3g}" for n in names))
    return {name: float(thresholds[name]) for name in names}


def class_thresholds(threshold: float | Sequence[float] | Mapping[str, float] | None,
                     class_names: Sequence[str]) -> list[float]:
    """One threshold per class from a number (every class), a list (in class order) or ``{class: threshold}``
    (every class named); None: 0.5."""
    names = [str(c) for c in class_names]
    if threshold is None:
        return [DEFAULT_THRESHOLD] * len(names)
    if isinstance(threshold, Mapping):
        missing = [n for n in names if n not in threshold]
        if missing:
            raise ValueError(f"threshold has no value for {missing} (it names {list(threshold)})")
        values = [float(threshold[n]) for n in names]
    elif isinstance(threshold, str) or np.ndim(threshold) == 0:
        values = [float(threshold)] * len(names)
    else:
        values = [float(t) for t in threshold]
        if len(values) != len(names):
            raise ValueError(f"threshold has {len(values)} values for {len(names)} classes {names}")
    if any(math.isnan(v) for v in values):  # above 1: never positive, a legitimate way to switch a class off
        raise ValueError(f"thresholds must be numbers, got {values}")
    return values


def positive_classes(probabilities: Sequence[float], class_names: Sequence[str],
                     thresholds: Sequence[float]) -> list[str]:
    """The classes whose probability reaches their threshold."""
    return [str(n) for n, p, t in zip(class_names, probabilities, thresholds) if p >= t]


def describe(threshold: float | Sequence[float] | Mapping[str, float], class_names: Sequence[str]) -> str:
    """``0.5`` for one shared value, else ``Nodule 0.12, Mass 0.08, ...``."""
    values = class_thresholds(threshold, class_names)
    if len(set(values)) == 1:
        return f"{values[0]:g}"
    return ", ".join(f"{n} {v:.3g}" for n, v in zip(class_names, values))
