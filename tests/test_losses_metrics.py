"""Hard-label loss and classification metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bundle.losses import HardLabelLoss
from bundle.metrics import classification_metrics


def test_multilabel_loss_ignores_masked_labels():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # three known labels: BCE(2,1) + BCE(0,0) + BCE(3,1), averaged
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(-3.0))) / 3
    assert HardLabelLoss("multilabel")(logits, target, mask).item() == pytest.approx(expected, rel=1e-6)
    # the masked logit gets no gradient
    logits.requires_grad_(True)
    HardLabelLoss("multilabel")(logits, target, mask).backward()
    assert logits.grad[0, 1].item() == 0.0


def test_multiclass_loss_is_cross_entropy_of_one_hot_targets():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 4.0]])
    target = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    by_hand = [-(2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))),
               -(4.0 - math.log(2 + math.exp(4.0)))]
    assert HardLabelLoss("multiclass")(logits, target).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_class_weights_weight_positive_examples_in_multilabel():
    logits, target = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    loss = HardLabelLoss("multilabel", class_weights=[3.0, 3.0])(logits, target)
    # pos_weight scales the positive label's term only
    assert loss.item() == pytest.approx((3 * math.log(2.0) + math.log(2.0)) / 2)


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task"):
        HardLabelLoss("regression")


def test_multilabel_metrics_skip_unknown_labels():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    probs = np.array([[0.9, 0.2], [0.2, 0.7], [0.6, 0.9], [0.4, 0.95]])
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], dtype=float)
    result = classification_metrics(labels, probs, mask, "multilabel", ["A", "B"])
    s = result["scalars"]
    assert s["auc/A"] == pytest.approx(1.0)
    # the unknown 4th label of B (a confident false positive if it counted) is left out
    assert s["auc/B"] == pytest.approx(roc_auc_score([0, 1, 1], [0.2, 0.7, 0.9]))
    assert s["auc_macro"] == pytest.approx((s["auc/A"] + s["auc/B"]) / 2)
    assert s["accuracy"] == pytest.approx((1.0 + 1.0) / 2)
    assert result["confusion_matrix"]["B"] == [[1, 0], [0, 2]]


def test_multiclass_metrics_and_nan_auc_for_absent_class():
    labels = np.eye(3)[[0, 1, 1, 0]]
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.7, 0.2, 0.1]])
    result = classification_metrics(labels, probs, None, "multiclass", ["N", "P", "C"])
    s = result["scalars"]
    assert s["accuracy"] == pytest.approx(0.75)
    assert math.isnan(s["auc/C"])  # no example of class C: AUC undefined, not 0.5
    assert s["auc_macro"] == pytest.approx(np.mean([s["auc/N"], s["auc/P"]]))
    assert result["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert "precision" in result["report"]


def test_bootstrap_interval_of_accuracy_matches_the_binomial_and_contains_the_auc():
    from bundle.metrics import bootstrap_intervals

    generator = np.random.default_rng(0)
    n = 400
    labels = np.eye(2)[generator.integers(0, 2, n)]
    correct = generator.random(n) < 0.8  # 80% right
    predicted = np.where(correct, labels.argmax(1), 1 - labels.argmax(1))
    probs = np.eye(2)[predicted] * 0.6 + 0.2
    probs[:, 1] += generator.normal(0, 0.05, n)
    scalars_of = lambda rows: classification_metrics(labels[rows], probs[rows], None, "multiclass", ["a", "b"])["scalars"]
    intervals = bootstrap_intervals(scalars_of, n, ("accuracy", "auc_macro"), resamples=400, seed=1)
    full = scalars_of(np.arange(n))
    low, high = intervals["accuracy"]
    # the normal approximation of a binomial proportion: +-1.96 sqrt(p (1 - p) / n) = +-0.039 at p = 0.8
    half = 1.96 * math.sqrt(full["accuracy"] * (1 - full["accuracy"]) / n)
    assert low < full["accuracy"] < high
    assert abs((high - low) / 2 - half) < 0.25 * half
    assert intervals["auc_macro"][0] < full["auc_macro"] < intervals["auc_macro"][1]
    assert bootstrap_intervals(scalars_of, n, ("accuracy",), resamples=50, seed=3) == \
        bootstrap_intervals(scalars_of, n, ("accuracy",), resamples=50, seed=3)  # seeded: reproducible
    with pytest.raises(ValueError, match="resample"):
        bootstrap_intervals(scalars_of, n, resamples=0)
