"""bundle.figures: the evaluation's curves and tables show metrics.json's numbers; overlays sit on the original pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bundle.figures import (
    EvaluationData,
    confusion_figure,
    reliability_figure,
    roc_figure,
    saliency_overlay,
    save_figure,
    write_evaluation_figures,
)
from bundle.metrics import classification_metrics

NAMES = ["Nodule", "Effusion", "Cardiomegaly"]


def _multilabel(seed: int = 0, n: int = 80) -> EvaluationData:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < 0.4).astype(float)
    probs = np.clip(0.6 * labels + 0.4 * rng.random((n, 3)), 0, 1)
    mask = np.ones_like(labels)
    mask[:10, 0] = 0  # unknown labels: left out of the curves as of the metrics
    return EvaluationData(labels, probs, mask, NAMES, "multilabel")


def _legend(figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_roc_legend_gives_the_per_class_auc_of_the_metrics():
    data = _multilabel()
    scalars = classification_metrics(data.labels, data.probabilities, data.mask, "multilabel", NAMES)["scalars"]
    legend = _legend(roc_figure(data))
    for name in NAMES:
        assert f"{name} (AUC {scalars[f'auc/{name}']:.3f})" in legend
    assert f"macro AUC {scalars['auc_macro']:.3f}" in roc_figure(data).axes[0].get_title()


def test_a_class_without_positives_is_named_not_drawn():
    data = _multilabel()
    data.labels[:, 2] = 0
    legend = _legend(roc_figure(data))
    assert any(text.startswith("Cardiomegaly (AUC undefined: 0 of 80 positive)") for text in legend)


def test_reliability_legend_gives_the_calibration_error_of_the_metrics():
    data = _multilabel(1)
    scalars = classification_metrics(data.labels, data.probabilities, data.mask, "multilabel", NAMES)["scalars"]
    legend = _legend(reliability_figure(data))
    for name in NAMES:
        assert f"{name} (ECE {scalars[f'ece/{name}']:.3f})" in legend


def test_confusion_matrix_counts_equal_the_metrics_confusion_matrix():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 60)
    labels = np.eye(3)[truth]
    probs = rng.dirichlet([1, 1, 1], 60) + 0.8 * labels
    probs /= probs.sum(axis=1, keepdims=True)
    expected = classification_metrics(labels, probs, None, "multiclass", NAMES)["confusion_matrix"]
    axes = confusion_figure(EvaluationData(labels, probs, np.ones_like(labels), NAMES, "multiclass")).axes[0]
    shown = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text().split("\n")[0])
             for t in axes.texts}
    assert [[shown[(r, c)] for c in range(3)] for r in range(3)] == expected


def test_multilabel_tables_count_each_finding_at_the_threshold():
    data = _multilabel(3)
    figure = confusion_figure(data)
    assert len(figure.axes) == 3
    report = classification_metrics(data.labels, data.probabilities, data.mask, "multilabel", NAMES)
    for axes, name in zip(figure.axes, NAMES):
        shown = [[int(t.get_text().split("\n")[0]) for t in axes.texts[row * 2:row * 2 + 2]] for row in range(2)]
        assert shown == report["confusion_matrix"][name], name


@pytest.mark.parametrize("task, table", [("multilabel", "confusion_tables"), ("multiclass", "confusion_matrix")])
def test_evaluation_figures_are_written_as_pngs(tmp_path, task, table):
    data = _multilabel()
    if task == "multiclass":
        data = EvaluationData(np.eye(3)[data.probabilities.argmax(1)], data.probabilities, np.ones((80, 3)), NAMES,
                              "multiclass")
    written = write_evaluation_figures(data, tmp_path, prefix="x_")
    assert sorted(p.name for p in written) == sorted(f"x_{n}.png" for n in ("roc", "precision_recall", table,
                                                                            "reliability"))
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300


def test_saliency_overlay_is_drawn_on_the_original_pixels(tmp_path):
    height, width = 300, 200
    image = np.tile(np.linspace(0.2, 0.8, width, dtype=np.float32), (height, 1))
    saliency = np.zeros((16, 16), dtype=np.float32)
    saliency[:4, 12:] = 1.0  # evidence in the top-right corner of the network's input
    path = save_figure(saliency_overlay(image, saliency, "Nodule  p = 0.87"), tmp_path / "overlay.png")
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB")).astype(int)
    assert rgb.shape[0] == height and rgb.shape[1] > width  # the full image plus a colour-bar strip
    region = rgb[:, :width]
    colour = np.abs(region[..., 0] - region[..., 2]) > 60  # the map's colours; grey has R == B
    rows, cols = np.nonzero(colour[int(0.15 * height):])  # below the corner label
    assert len(rows) and rows.min() + int(0.15 * height) < height / 4 + 2 and cols.min() >= 0.7 * width
    # away from the map the radiograph is unchanged
    grey = np.round(image[height - 10, 20] * 255)
    assert np.abs(region[height - 10, 20] - grey).max() <= 2
