"""Pictures of a classifier: ROC and precision-recall curves, confusion tables, reliability, saliency overlays.

Where people would rather look than read: the evaluation's PNGs (``configs/evaluate.json`` writes
them under ``<output_dir>/eval/`` with :class:`~bundle.handlers.EvaluationFigures`), the figures
TensorBoard shows during training (:class:`~bundle.handlers.ValidationFigures`) and the saliency
overlays of inference and the deploy app (:func:`saliency_overlay`, on the full-resolution
radiograph).

Drawn with matplotlib's object API on its Agg canvas (``matplotlib.figure.Figure``, never
``pyplot``), so nothing needs a display or changes a global backend, and figures are safe to draw
from any thread. Every number a figure shows is the one ``metrics.json`` holds: the curves are
scikit-learn's on the same known (unmasked) labels, the AUCs and calibration errors are
:mod:`bundle.metrics`' own.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from .metrics import calibration_bins, expected_calibration_error

__all__ = [
    "ClassOutcomes",
    "EvaluationData",
    "confusion_figure",
    "figure_to_rgb",
    "precision_recall_figure",
    "reliability_figure",
    "roc_figure",
    "saliency_overlay",
    "saliency_panels_figure",
    "save_figure",
    "write_evaluation_figures",
]

CALIBRATION_BINS = 10  # as bundle.metrics' ece/<class>


@dataclass
class ClassOutcomes:
    """One class's known labels (0/1) and predicted probabilities (one-vs-rest for multi-class)."""

    name: str
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def defined(self) -> bool:
        """ROC and precision-recall need a positive and a negative example."""
        return 0 < self.labels.sum() < len(self.labels)


@dataclass
class EvaluationData:
    """An evaluation's targets and probabilities, as :class:`~bundle.metrics.ClassificationMetrics` holds them.

    Args:
        labels: (N, C) multi-hot (multi-label) or one-hot (multi-class).
        probabilities: (N, C) sigmoid or softmax outputs.
        mask: (N, C), 1 where the label is known.
        class_names, task, threshold: as the metric's.
        title: what the figures' titles name (e.g. ``"test split"``, or a head of a two-head network).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    mask: np.ndarray
    class_names: list[str]
    task: str
    threshold: float | Sequence[float] | Mapping[str, float] = 0.5
    title: str = ""

    def thresholds(self) -> list[float]:
        """The multi-label decision threshold of each class (one shared number, or per class)."""
        from .thresholds import class_thresholds

        return class_thresholds(self.threshold, self.class_names)

    def classes(self) -> list[ClassOutcomes]:
        """Per class, the known labels and probabilities (multi-class: the rows with a known label, one-vs-rest)."""
        if self.task == "multilabel":
            return [ClassOutcomes(name, self.labels[self.mask[:, c] > 0, c].astype(int),
                                  self.probabilities[self.mask[:, c] > 0, c]) for c, name in enumerate(self.class_names)]
        known = self.mask.min(axis=1) > 0
        truth = self.labels[known].argmax(axis=1)
        return [ClassOutcomes(name, (truth == c).astype(int), self.probabilities[known, c])
                for c, name in enumerate(self.class_names)]

    @classmethod
    def from_metric(cls, metric: Any, title: str = "") -> list[tuple[str, EvaluationData]]:
        """``[(file prefix, data)]`` from a computed :class:`~bundle.metrics.ClassificationMetrics`: one entry,
        or one per head of a :class:`~bundle.metrics.MultiTaskMetrics` (``mlct_``: findings, ``mcct_``:
        normal / abnormal), built exactly as the metric builds its report."""
        import torch

        from .metrics import MultiTaskMetrics, probabilities

        logits, labels, mask = metric.outputs()
        if not isinstance(metric, MultiTaskMetrics):
            return [("", cls(labels, probabilities(logits, metric.task), mask, metric.class_names, metric.task,
                             metric.threshold, title))]
        layout = metric.layout
        logits_t, labels_t, mask_t = (torch.as_tensor(a) for a in (logits, labels, mask))
        y_f, m_f, y_g, m_g = layout.targets(labels_t, mask_t)
        findings, _ = layout.split(logits_t)
        return [
            ("mlct_", cls(y_f.numpy(), torch.sigmoid(findings).numpy(), m_f.numpy(), list(layout.finding_names),
                          "multilabel", metric.threshold, f"{title}, findings".strip(", "))),
            ("mcct_", cls(y_g.numpy(), layout.global_probabilities(logits_t).numpy(), m_g.numpy(),
                          ["Normal", "Abnormal"], "multiclass", metric.threshold,
                          f"{title}, normal / abnormal".strip(", "))),
        ]


def _colours(count: int) -> list[Any]:
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _title(base: str, data: EvaluationData) -> str:
    return f"{base}: {data.title}" if data.title else base


def _legend(axes: Any, count: int) -> None:
    axes.legend(loc="lower right" if count <= 8 else "center left", fontsize=8 if count <= 8 else 7,
                bbox_to_anchor=None if count <= 8 else (1.02, 0.5), frameon=True)


def roc_figure(data: EvaluationData) -> Figure:
    """ROC curve of every class (one-vs-rest for multi-class), each class's AUC in the legend."""
    figure = Figure(figsize=(7.5 if len(data.class_names) <= 8 else 10, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    aucs = []
    for outcome, colour in zip(data.classes(), _colours(len(data.class_names))):
        if not outcome.defined:
            axes.plot([], [], color=colour, label=f"{outcome.name} (AUC undefined: {int(outcome.labels.sum())} of "
                                                   f"{len(outcome.labels)} positive)")
            continue
        fpr, tpr, _ = roc_curve(outcome.labels, outcome.probabilities)
        auc = float(roc_auc_score(outcome.labels, outcome.probabilities))
        aucs.append(auc)
        axes.plot(fpr, tpr, color=colour, linewidth=1.8, label=f"{outcome.name} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC 0.5)")
    macro = f"macro AUC {np.mean(aucs):.3f}" if aucs else "macro AUC undefined"
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)",
             ylabel="true positive rate (sensitivity)", title=f"{_title('ROC', data)} ({macro})", aspect="equal")
    axes.grid(alpha=0.3)
    _legend(axes, len(data.class_names) + 1)
    return figure


def precision_recall_figure(data: EvaluationData) -> Figure:
    """Precision-recall curve of every class, its average precision and prevalence (a chance model's
    precision) in the legend."""
    figure = Figure(figsize=(7.5 if len(data.class_names) <= 8 else 10, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for outcome, colour in zip(data.classes(), _colours(len(data.class_names))):
        prevalence = float(outcome.labels.mean()) if len(outcome.labels) else math.nan
        if not outcome.defined:
            axes.plot([], [], color=colour, label=f"{outcome.name} (undefined: prevalence {prevalence:.2f})")
            continue
        precision, recall, _ = precision_recall_curve(outcome.labels, outcome.probabilities)
        average = float(average_precision_score(outcome.labels, outcome.probabilities))
        axes.plot(recall, precision, color=colour, linewidth=1.8, drawstyle="steps-post",
                  label=f"{outcome.name} (AP {average:.3f}, prevalence {prevalence:.2f})")
        axes.axhline(prevalence, color=colour, linestyle=":", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (positive predictive value)",
             title=f"{_title('Precision-recall', data)} (dotted: each class's prevalence)")
    axes.grid(alpha=0.3)
    _legend(axes, len(data.class_names))
    return figure


def _table(axes: Any, counts: np.ndarray, row_names: Sequence[str], column_names: Sequence[str], title: str,
           font_size: float) -> None:
    """A confusion table: counts and each row's percentage, coloured by the row share."""
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, f"{count}\n{100 * shares[row, column]:.0f}%", ha="center", va="center",
                  fontsize=font_size, color="white" if shares[row, column] > 0.6 else "black")
    axes.set_xticks(range(len(column_names)), column_names, fontsize=font_size)
    axes.set_yticks(range(len(row_names)), row_names, fontsize=font_size)
    axes.set_xlabel("predicted", fontsize=font_size)
    axes.set_ylabel("true", fontsize=font_size)
    axes.set_title(title, fontsize=font_size + 1)


def confusion_figure(data: EvaluationData) -> Figure:
    """Multi-class: the confusion matrix (rows true, columns predicted; counts and row percentages).
    Multi-label: one 2 x 2 table per finding at the decision threshold."""
    classes = data.classes()
    if data.task == "multiclass":
        known = data.mask.min(axis=1) > 0
        truth, predicted = data.labels[known].argmax(axis=1), data.probabilities[known].argmax(axis=1)
        size = len(data.class_names)
        counts = confusion_matrix(truth, predicted, labels=list(range(size)))
        side = max(5.0, 1.1 * size + 2)
        figure = Figure(figsize=(side, side), dpi=100, layout="constrained")
        _table(figure.add_subplot(), counts, data.class_names, data.class_names,
               f"{_title('Confusion matrix', data)} ({int(counts.sum())} images)", 10 if size <= 6 else 8)
        return figure
    columns = min(len(classes), 5)
    rows = math.ceil(len(classes) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows + 0.5), dpi=100, layout="constrained")
    thresholds = data.thresholds()
    shared = len(set(thresholds)) == 1
    figure.suptitle(f"{_title('Per-finding confusion tables', data)} "
                    f"({f'threshold {thresholds[0]:g}' if shared else 'per-finding thresholds'})")
    for index, (outcome, threshold) in enumerate(zip(classes, thresholds)):
        predicted = (outcome.probabilities >= threshold).astype(int)
        counts = confusion_matrix(outcome.labels, predicted, labels=[0, 1])
        _table(figure.add_subplot(rows, columns, index + 1), counts, ["absent", "present"], ["absent", "present"],
               f"{outcome.name} ({len(outcome.labels)})" + ("" if shared else f", >= {threshold:.3g}"), 9)
    return figure


def reliability_figure(data: EvaluationData, bins: int = CALIBRATION_BINS) -> Figure:
    """Reliability diagram: per class, the observed frequency against the mean predicted probability in
    ``bins`` equal-width bins (the diagonal is perfect calibration; ECE in the legend, as ``ece/<class>``),
    and below it how many predictions fall in each bin."""
    figure = Figure(figsize=(7.5 if len(data.class_names) <= 8 else 10, 8), dpi=100, layout="constrained")
    curve, counts_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    edges = np.linspace(0, 1, bins + 1)
    for outcome, colour in zip(data.classes(), _colours(len(data.class_names))):
        counts, label_sums, probability_sums = calibration_bins(outcome.labels, outcome.probabilities, bins)
        filled = counts > 0
        observed, predicted = label_sums[filled] / counts[filled], probability_sums[filled] / counts[filled]
        ece = expected_calibration_error(outcome.labels, outcome.probabilities, bins)
        curve.plot(predicted, observed, marker="o", markersize=4, color=colour, linewidth=1.5,
                   label=f"{outcome.name} (ECE {ece:.3f})")
        counts_axes.stairs(counts, edges, color=colour, linewidth=1.2)
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    curve.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency of the class",
              title=f"{_title('Reliability', data)} ({bins} equal-width bins)")
    curve.grid(alpha=0.3)
    _legend(curve, len(data.class_names) + 1)
    counts_axes.set(xlabel="predicted probability", ylabel="images per bin")
    counts_axes.grid(alpha=0.3)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write a figure as PNG (Agg) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")
    return path


def figure_to_rgb(figure: Figure) -> np.ndarray:
    """The figure's pixels, ``(H, W, 3)`` uint8 (for TensorBoard's ``add_image``)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_evaluation_figures(data: EvaluationData, folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """``roc.png``, ``precision_recall.png``, ``confusion_matrix.png`` (multi-class) or ``confusion_tables.png``
    (multi-label; with per-class thresholds also ``confusion_tables_at_0.5.png``) and ``reliability.png`` under
    ``folder`` (each name after ``prefix``)."""
    folder = Path(folder)
    confusion = "confusion_matrix" if data.task == "multiclass" else "confusion_tables"
    figures = {"roc": roc_figure, "precision_recall": precision_recall_figure, confusion: confusion_figure,
               "reliability": reliability_figure}
    if data.task == "multilabel" and set(data.thresholds()) != {0.5}:  # the tables at 0.5 too, for comparison
        figures["confusion_tables_at_0.5"] = lambda d: confusion_figure(dataclasses.replace(d, threshold=0.5))
    return [save_figure(draw(data), folder / f"{prefix}{name}.png") for name, draw in figures.items()]


# ----------------------------------------------------------------------------------------------
# saliency


def _upsampled(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map resized bilinearly onto ``shape`` (the network input was an area-resize of the whole image,
    without crop or padding, so the map's pixels cover the original's in the same proportions)."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(np.asarray(saliency, dtype=np.float32))[None, None]
    if tuple(tensor.shape[-2:]) == tuple(shape):
        return tensor[0, 0].numpy()
    return F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


def _blend(image: np.ndarray, saliency: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Grey image with the map's colours laid over it in proportion to the map (alpha = map / 2):
    where the map is 0 the radiograph shows unchanged."""
    grey = np.repeat(np.clip(np.asarray(image, dtype=np.float64), 0, 1)[..., None], 3, axis=2)
    saliency = np.clip(np.asarray(saliency, dtype=np.float64), 0, 1)
    colour = colormaps[cmap](saliency)[..., :3]
    alpha = 0.5 * saliency[..., None]
    # grey + alpha * (colour - grey), not (1 - alpha) * grey + alpha * colour: the two weights of the latter,
    # rounded apart (1 - alpha was float32), summed to more than 1 (1.0000000260 on white), and matplotlib
    # clipped every such overlay with a warning; this form stays between grey and colour, so within [0, 1]
    return grey + alpha * (colour - grey)


def saliency_overlay(image: np.ndarray, saliency: np.ndarray, label: str, colorbar_label: str = "Grad-CAM",
                     cmap: str = "jet") -> Figure:
    """The map over the radiograph at the radiograph's own resolution, with a colour bar and ``label``
    (e.g. ``"Cardiomegaly  p = 0.91"``) in the top-left corner.

    Args:
        image: ``(H, W)`` in [0, 1], the image as read (full resolution, bone bright).
        saliency: ``(h, w)`` in [0, 1], e.g. at the network's input size; upsampled bilinearly onto ``(H, W)``.
        label: the corner text.
        colorbar_label: what the colours mean.

    The figure is ``H`` pixels high; the image occupies exactly ``W x H`` pixels of it (one figure pixel
    per image pixel), the colour bar a strip to its right.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:  # (1, H, W)
        image = image[0]
    height, width = image.shape
    saliency = np.asarray(saliency, dtype=np.float32)
    saliency = _upsampled(saliency[0] if saliency.ndim == 3 else saliency, (height, width))
    if float(saliency.max()) <= 0:  # Grad-CAM keeps positive evidence only; none is an answer too
        label += "\n(map flat: no positive evidence)"
    strip = max(int(0.18 * height), 90)  # colour bar, its ticks and its label
    dpi = 100
    figure = Figure(figsize=((width + strip) / dpi, height / dpi), dpi=dpi, facecolor="black")
    image_axes = figure.add_axes((0, 0, width / (width + strip), 1))
    image_axes.imshow(_blend(image, saliency, cmap), interpolation="none", aspect="auto")
    image_axes.set_axis_off()
    points = max(height / 45, 7.0) * 72 / dpi  # text about 1/45 of the image height
    image_axes.text(0.015, 1 - 0.015 * width / height, label, transform=image_axes.transAxes, ha="left", va="top",
                    color="white", fontsize=points, fontweight="bold",
                    bbox={"facecolor": "black", "alpha": 0.65, "edgecolor": "none", "pad": points * 0.4})
    left = (width + 0.12 * strip) / (width + strip)
    bar_axes = figure.add_axes((left, 0.1, 0.16 * strip / (width + strip), 0.8))
    bar = figure.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), cax=bar_axes)
    bar.set_ticks([0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=points * 0.8, colors="white")
    bar.set_label(f"{colorbar_label} (1 = strongest evidence)", color="white", fontsize=points * 0.8)
    bar.outline.set_edgecolor("white")
    return figure


def saliency_panels_figure(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], titles: Sequence[str],
                           suptitle: str = "", cmap: str = "jet") -> Figure:
    """A row of small overlays (network-input size) with a title each: TensorBoard's per-epoch view."""
    count = len(images)
    figure = Figure(figsize=(2.6 * count, 3.0), dpi=100, layout="constrained")
    if suptitle:
        figure.suptitle(suptitle, fontsize=9)
    for index, (image, saliency, title) in enumerate(zip(images, maps, titles)):
        image = np.asarray(image, dtype=np.float32)
        image = image[0] if image.ndim == 3 else image
        saliency = np.asarray(saliency, dtype=np.float32)
        saliency = _upsampled(saliency[0] if saliency.ndim == 3 else saliency, image.shape)
        axes = figure.add_subplot(1, count, index + 1)
        axes.imshow(_blend(image, saliency, cmap), interpolation="nearest")
        axes.set_title(title, fontsize=7)
        axes.set_axis_off()
    return figure
