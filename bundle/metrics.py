"""Classification metrics for chest X-ray tasks, computed by scikit-learn.

Two things MONAI's and Ignite's metrics do not do, and the reason this module
exists: they ignore the *label mask* (unknown CheXpert labels must not count as
negatives), and each computes one number, where a report needs per-class and
macro AUC, precision, recall, F1, accuracy and confusion matrices from one pass.

``classification_metrics`` is the pure function; ``ClassificationMetrics`` is the
Ignite metric that accumulates an evaluator's outputs and puts the scalars in
``engine.state.metrics`` (so MONAI's key-metric checkpointing, StatsHandler and
TensorBoard see them) and the full report in ``engine.state.classification_report``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from .console import progress as progress_bar
from .keys import Keys
from .thresholds import class_thresholds

__all__ = ["bootstrap_intervals", "calibration_bins", "classification_metrics", "expected_calibration_error", "ClassificationMetrics", "MultiTaskMetrics", "probabilities"]


def probabilities(logits: torch.Tensor | np.ndarray, task: str) -> np.ndarray:
    """Sigmoid (multi-label) or softmax (multi-class) of logits, as a numpy array."""
    logits = torch.as_tensor(logits, dtype=torch.float32)
    return (torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)).numpy()


def _auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    # AUC is undefined when a class has no positive or no negative example among the known labels
    return float(roc_auc_score(y_true, y_score)) if 0 < y_true.sum() < len(y_true) else math.nan


def calibration_bins(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin over [0, 1]: ``(count, sum of labels, sum of probabilities)``.

    The one binning behind :func:`expected_calibration_error` and the reliability diagram
    (:func:`bundle.figures.reliability_figure`), so the picture shows the bins the number is made of.
    """
    y_true, y_prob = np.asarray(y_true, dtype=np.float64), np.asarray(y_prob, dtype=np.float64)
    which = np.minimum((y_prob * bins).astype(int), bins - 1)
    return (np.bincount(which, minlength=bins), np.bincount(which, y_true, bins),
            np.bincount(which, y_prob, bins))


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of one binary outcome: ``sum_b (n_b / n) |mean(y)_b - mean(p)_b|``.

    Probabilities are put in ``bins`` equal-width bins over [0, 1] (Naeini et al. 2015; Guo et al.
    2017); a perfectly calibrated model has ECE 0. NaN without samples.
    """
    if not len(y_true):
        return math.nan
    counts, label_sums, probability_sums = calibration_bins(y_true, y_prob, bins)
    return float(np.abs(label_sums - probability_sums).sum() / counts.sum())  # |sum y - sum p| per bin


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def classification_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    mask: np.ndarray | None,
    task: str,
    class_names: Sequence[str],
    threshold: float | Sequence[float] | Mapping[str, float] = 0.5,
    details: bool = True,
    compare_threshold: float | None = None,
) -> dict[str, Any]:
    """Per-class and macro metrics of one evaluation.

    Args:
        labels: (N, C) multi-hot (multi-label) or one-hot (multi-class) targets.
        probs: (N, C) probabilities (sigmoid or softmax outputs).
        mask: (N, C), 1 where the label is known; None = all known.
        task: ``"multilabel"`` or ``"multiclass"``.
        class_names: the C class names, used as keys.
        threshold: decision threshold of multi-label predictions: one for every class, a list in class order,
            or ``{class: threshold}`` (the per-class thresholds of :mod:`bundle.thresholds`).
        details: also the confusion matrices and the text report (False: scalars only, for
            the many recomputations of a bootstrap).
        compare_threshold: multi-label, when the thresholds are not all this value: the threshold-dependent
            metrics at it too, for comparison: ``at<t>/accuracy``, ``at<t>/precision_macro``,
            ``at<t>/recall_macro``, ``at<t>/f1_macro``, ``at<t>/f1/<class>`` ... (e.g. ``at0.5/f1_macro``),
            ``confusion_matrix_compare`` and a second table in the report.

    Returns:
        ``{"scalars": {...}, "confusion_matrix": ..., "report": str}`` where
        scalars holds ``auc_macro``, ``accuracy``, ``precision_macro``,
        ``recall_macro``, ``f1_macro``, ``ece_macro`` and ``auc/<class>``, ``f1/<class>``,
        ``precision/<class>``, ``recall/<class>``, ``ece/<class>`` (expected calibration error of
        the class's probability, one-vs-rest for multi-class, 10 bins:
        :func:`expected_calibration_error`). AUCs of classes without both
        positives and negatives are NaN and left out of the macro average.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    mask = np.ones_like(labels) if mask is None else np.asarray(mask, dtype=np.float64)
    names = list(class_names)
    scalars: dict[str, float] = {}
    compared = None
    thresholds: list[float] = []
    if task == "multilabel":
        thresholds = class_thresholds(threshold, names)
        aucs, eces = [], []
        for c in range(len(names)):
            known = mask[:, c] > 0
            aucs.append(_auc(labels[known, c].astype(int), probs[known, c]))
            eces.append(expected_calibration_error(labels[known, c].astype(int), probs[known, c]))
        accs, prec, rec, f1, support, confusion = _thresholded(labels, probs, mask, names, thresholds, details)
        report = _multilabel_table(names, prec, rec, f1, support, thresholds)
        accuracy = _nanmean(accs)  # mean per-finding accuracy over known labels
        if compare_threshold is not None and any(t != compare_threshold for t in thresholds):
            compared = _thresholded(labels, probs, mask, names, [float(compare_threshold)] * len(names), details)
            if details:
                report += (f"\nat threshold {compare_threshold:g} for every finding, for comparison\n"
                           + _multilabel_table(names, *compared[1:5]))
    else:
        known = mask.min(axis=1) > 0
        y, p = labels[known].argmax(axis=1), probs[known]
        pred = p.argmax(axis=1)
        aucs = [_auc((y == c).astype(int), p[:, c]) for c in range(len(names))]
        eces = [expected_calibration_error((y == c).astype(int), p[:, c]) for c in range(len(names))]
        prec, rec, f1, _ = precision_recall_fscore_support(
            y, pred, labels=list(range(len(names))), average=None, zero_division=0
        )
        prec, rec, f1 = prec.tolist(), rec.tolist(), f1.tolist()
        confusion = confusion_matrix(y, pred, labels=list(range(len(names)))).tolist() if details else None
        report = (classification_report(y, pred, labels=list(range(len(names))), target_names=names, zero_division=0)
                  if details else "")
        accuracy = float(accuracy_score(y, pred)) if len(y) else math.nan
    scalars["auc_macro"] = _nanmean(aucs)
    scalars["accuracy"] = accuracy
    scalars["precision_macro"] = _nanmean(prec)
    scalars["recall_macro"] = _nanmean(rec)
    scalars["f1_macro"] = _nanmean(f1)
    scalars["ece_macro"] = _nanmean(eces)
    if details:
        width = max(len(n) for n in names)
        report += "\nexpected calibration error (10 equal-width bins; 0 = calibrated)\n"
        report += "".join(f"{n:>{width}}  {e:9.3f}\n" for n, e in zip(names, eces))
        report += f"{'macro':>{width}}  {scalars['ece_macro']:9.3f}\n"
    for name, auc, pc, rc, fc, ece in zip(names, aucs, prec, rec, f1, eces):
        scalars[f"auc/{name}"] = auc
        scalars[f"precision/{name}"] = pc
        scalars[f"recall/{name}"] = rc
        scalars[f"f1/{name}"] = fc
        scalars[f"ece/{name}"] = ece
    result = {"scalars": scalars, "confusion_matrix": confusion, "report": report, "num_samples": int(len(labels))}
    if task == "multilabel":
        result["thresholds"] = dict(zip(names, thresholds))
    if compared is not None:
        prefix = f"at{compare_threshold:g}/"
        accs, prec, rec, f1, _, compared_confusion = compared
        scalars[f"{prefix}accuracy"] = _nanmean(accs)
        for key, values in (("precision", prec), ("recall", rec), ("f1", f1)):
            scalars[f"{prefix}{key}_macro"] = _nanmean(values)
            scalars.update({f"{prefix}{key}/{name}": value for name, value in zip(names, values)})
        result["compare_threshold"] = float(compare_threshold)
        result["confusion_matrix_compare"] = compared_confusion
    return result


def _thresholded(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray, names: Sequence[str],
                 thresholds: Sequence[float], details: bool) -> tuple[list, list, list, list, list, dict | None]:
    """Multi-label, per class at its threshold: accuracy, precision, recall, F1, support and (``details``) the
    2 x 2 confusion table ``[[TN, FP], [FN, TP]]``, over the known labels."""
    accs, prec, rec, f1, support = [], [], [], [], []
    confusion: dict[str, Any] | None = {} if details else None
    for c, name in enumerate(names):
        known = mask[:, c] > 0
        y, p = labels[known, c].astype(int), probs[known, c]
        pred = (p >= thresholds[c]).astype(int)
        accs.append(float(accuracy_score(y, pred)) if known.any() else math.nan)
        pc, rc, fc, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
        prec.append(float(pc)), rec.append(float(rc)), f1.append(float(fc)), support.append(int(y.sum()))
        if confusion is not None:
            confusion[name] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return accs, prec, rec, f1, support, confusion


def _multilabel_table(names: Sequence[str], prec: Sequence[float], rec: Sequence[float], f1: Sequence[float],
                      support: Sequence[int], thresholds: Sequence[float] | None = None) -> str:
    """sklearn's report layout (which cannot skip unknown labels per class), with the masked numbers; a
    threshold column when the classes have their own thresholds."""
    width = max(len(n) for n in names)
    per_class = thresholds is not None and len(set(thresholds)) > 1
    rows = [f"{'':>{width}}  precision    recall  f1-score   support" + ("  threshold" if per_class else "")]
    for index, (n, a, b, c, s) in enumerate(zip(names, prec, rec, f1, support)):
        rows.append(f"{n:>{width}}  {a:9.2f} {b:9.2f} {c:9.2f} {s:9d}"
                    + (f"  {thresholds[index]:9.3g}" if per_class else ""))
    return "\n".join(rows) + "\n"


def bootstrap_intervals(
    scalars_of: Callable[[np.ndarray], Mapping[str, float]],
    num_samples: int,
    keys: Sequence[str] = ("auc_macro", "accuracy", "f1_macro"),
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool | None = False,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap confidence intervals of metrics over the evaluated images.

    ``scalars_of(rows)`` computes the metrics on the samples ``rows`` (e.g.
    ``lambda rows: metric.report(rows)["scalars"]``); each of ``resamples`` draws takes
    ``num_samples`` rows with replacement, and the interval of a key is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of its values over the draws (draws
    where it is undefined, e.g. an AUC without positives, are left out). The images are the
    resampled unit, so the interval says how much the number would move on another test set
    of the same size from the same source; it says nothing of a shifted one. ``progress``: a progress
    bar over the draws (None: on a terminal only; :func:`bundle.console.progress`).
    """
    if num_samples < 2 or resamples < 1:
        raise ValueError(f"a bootstrap needs >= 2 samples and >= 1 resample, got {num_samples} and {resamples}")
    generator = np.random.default_rng(seed)
    values: dict[str, list[float]] = {key: [] for key in keys}
    for _ in progress_bar(range(resamples), "bootstrap", enabled=progress):
        scalars = scalars_of(generator.integers(0, num_samples, num_samples))
        for key in keys:
            values[key].append(float(scalars[key]))
    tail = (1.0 - level) / 2.0
    intervals = {}
    for key, draws in values.items():
        finite = np.asarray([v for v in draws if not math.isnan(v)])
        intervals[key] = ((float(np.quantile(finite, tail)), float(np.quantile(finite, 1.0 - tail)))
                          if len(finite) else (math.nan, math.nan))
    return intervals


def _from_output(output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return output[Keys.PRED], output[Keys.LABEL], output.get(Keys.LABEL_MASK)


class ClassificationMetrics(Metric):
    """Ignite metric over a whole evaluation run; its value is ``key`` (default ``auc_macro``).

    Attach it as the MONAI evaluator's key metric under the same name as ``key``; all
    other scalars land in ``engine.state.metrics`` beside it, and the full report
    (confusion matrix, text report) in ``engine.state.classification_report``.

    ``threshold``: multi-label decision threshold(s), one number or per class (``configs/evaluate.json`` passes
    the checkpoint's, :func:`bundle.thresholds.checkpoint_thresholds`); ``compare_threshold``: where they
    differ from it, the threshold-dependent metrics at it too (``at0.5/f1_macro`` ...).

    Config example::

        "key_val_metric": {"auc_macro": {"_target_": "bundle.metrics.ClassificationMetrics",
                                         "task": "@task", "class_names": "@class_names"}}
    """

    def __init__(
        self,
        task: str,
        class_names: Sequence[str],
        key: str = "auc_macro",
        threshold: float | Sequence[float] | Mapping[str, float] = 0.5,
        output_transform: Callable = _from_output,
        device: str | torch.device = "cpu",
        compare_threshold: float | None = 0.5,
    ) -> None:
        self.task, self.class_names, self.key, self.threshold = task, list(class_names), key, threshold
        self.compare_threshold = compare_threshold
        if task == "multilabel":
            class_thresholds(threshold, self.class_names)  # a misfit threshold fails here, not after the evaluation
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> None:
        logits, labels, mask = output
        logits = torch.stack(list(logits)) if isinstance(logits, (list, tuple)) else logits
        labels = torch.stack(list(labels)) if isinstance(labels, (list, tuple)) else labels
        self._logits.append(logits.detach().float().cpu())
        self._labels.append(labels.detach().float().cpu())
        self._masks.append(torch.ones_like(self._labels[-1]) if mask is None else mask.detach().float().cpu())
        self._arrays = None

    def _gathered(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, labels and masks of the whole evaluation (gathered once), or of ``rows`` of it."""
        if self._arrays is None:
            tensors = [torch.cat(items) for items in (self._logits, self._labels, self._masks)]
            if idist.get_world_size() > 1:  # every rank reports the metrics of the whole evaluation set
                tensors = [idist.all_gather(t) for t in tensors]
            self._arrays = tuple(t.numpy() for t in tensors)  # type: ignore[assignment]
        return self._arrays if rows is None else tuple(a[rows] for a in self._arrays)  # type: ignore[return-value]

    def outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(logits, labels, mask)`` of the whole evaluation, each ``(N, C)`` (gathered over processes):
        what figures of it are drawn from (:mod:`bundle.figures`)."""
        return self._gathered()

    def report(self, rows: np.ndarray | None = None, details: bool = True) -> dict[str, Any]:
        """The metrics of the evaluation, or of the samples ``rows`` (indices, repeats allowed: a bootstrap
        draw); ``details=False``: scalars only (see :func:`classification_metrics`)."""
        logits, labels, mask = self._gathered(rows)
        return classification_metrics(labels, probabilities(logits, self.task), mask, self.task, self.class_names,
                                      self.threshold, details, self.compare_threshold)

    def compute(self) -> float:
        return self.report()["scalars"][self.key]

    def scored_heads(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        """What the metrics are computed from, per image: ``{head: (labels, mask, probabilities, class names)}``,
        each array ``(N, C)``; one head ``""`` here (``"mlct/"`` and ``"mcct/"`` for :class:`MultiTaskMetrics`).
        Multi-class masks are per image (a row with an unknown label is left out of every class), as the
        metrics leave it out. Written per image by :class:`bundle.handlers.PerImageScores`."""
        logits, labels, mask = self._gathered()
        if self.task != "multilabel":
            mask = np.repeat(mask.min(axis=1, keepdims=True), mask.shape[1], axis=1)
        return {"": (labels, mask, probabilities(logits, self.task), list(self.class_names))}

    def completed(self, engine: Engine, name: str) -> None:
        report = self.report()
        engine.state.metrics.update(report["scalars"])
        engine.state.metrics[name] = report["scalars"][self.key]
        engine.state.classification_report = report
        engine.state.classification_metric = self  # for handlers that recompute on resampled rows (bootstrap CIs)


class MultiTaskMetrics(ClassificationMetrics):
    """Metrics of both heads of a findings + normal/abnormal network (the ViTs of MLCAK).

    The network's logits are split by a :class:`~bundle.networks.HeadLayout`, which also
    derives each head's targets from the data set's labels:

    * ``mlct/...``: multi-label metrics of the findings (sigmoid): ``mlct/auc_macro``,
      ``mlct/auc/<finding>``, ``mlct/f1_macro`` ...;
    * ``mcct/...``: multi-class metrics of normal / abnormal (softmax of the two global
      logits; with one head, the noisy-OR of the findings, see
      :meth:`~bundle.networks.HeadLayout.global_probabilities`): ``mcct/auc_macro``,
      ``mcct/accuracy`` ...;
    * ``auc_macro``: the mean of ``mlct/auc_macro`` and ``mcct/auc_macro`` (the key metric that
      picks the best checkpoint: both heads count); ``accuracy`` and ``f1_macro`` are the
      normal / abnormal head's.

    ``classification_report`` holds both heads' confusion matrices and text reports.

    Config example::

        "key_val_metric": {"auc_macro": {"_target_": "bundle.metrics.MultiTaskMetrics", "layout": "@data#heads"}}
    """

    def __init__(self, layout: Any, key: str = "auc_macro", threshold: float = 0.5,
                 output_transform: Callable = _from_output, device: str | torch.device = "cpu") -> None:
        self.layout = layout
        super().__init__(task=layout.task, class_names=layout.class_names, key=key, threshold=threshold,
                         output_transform=output_transform, device=device)

    def scored_heads(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        """Both heads' labels, masks and probabilities per image (see :meth:`ClassificationMetrics.scored_heads`)."""
        logits, labels, mask = (torch.as_tensor(a) for a in self._gathered())
        y_f, m_f, y_g, m_g = self.layout.targets(labels, mask)
        findings, _ = self.layout.split(logits)
        m_g = m_g.reshape(len(m_g), -1).min(dim=1, keepdim=True).values.expand(-1, 2)
        return {"mlct/": (y_f.numpy(), m_f.numpy(), torch.sigmoid(findings).numpy(), list(self.layout.finding_names)),
                "mcct/": (y_g.numpy(), m_g.numpy(), self.layout.global_probabilities(logits).numpy(),
                          ["Normal", "Abnormal"])}

    def report(self, rows: np.ndarray | None = None, details: bool = True) -> dict[str, Any]:
        logits, labels, mask = (torch.as_tensor(a) for a in self._gathered(rows))
        y_f, m_f, y_g, m_g = self.layout.targets(labels, mask)
        findings, _ = self.layout.split(logits)
        heads = {
            "mlct": classification_metrics(y_f.numpy(), torch.sigmoid(findings).numpy(), m_f.numpy(), "multilabel",
                                           self.layout.finding_names, self.threshold, details),
            "mcct": classification_metrics(y_g.numpy(), self.layout.global_probabilities(logits).numpy(), m_g.numpy(),
                                           "multiclass", ["Normal", "Abnormal"], self.threshold, details),
        }
        scalars = {f"{head}/{name}": value for head, r in heads.items() for name, value in r["scalars"].items()}
        scalars["auc_macro"] = _nanmean([scalars["mlct/auc_macro"], scalars["mcct/auc_macro"]])
        scalars["accuracy"] = scalars["mcct/accuracy"]
        scalars["f1_macro"] = scalars["mcct/f1_macro"]
        report = "".join(f"{head} ({'findings' if head == 'mlct' else 'normal / abnormal'}"
                         f"{', derived from the findings' if head == 'mcct' and self.layout.heads == 1 else ''})\n"
                         f"{r['report']}\n" for head, r in heads.items())
        return {"scalars": scalars, "confusion_matrix": {head: r["confusion_matrix"] for head, r in heads.items()},
                "report": report, "num_samples": int(len(labels))}
