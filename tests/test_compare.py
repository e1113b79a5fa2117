"""Paired comparisons of two models (bundle.compare): DeLong's test and the paired bootstrap over images,
against hand computations and a published example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bundle.compare import (ImageScores, auc_components, compare, criteria, delong_test, macro_auc, paired_bootstrap,
                            read_per_image, write_per_image)
from bundle.data import CXRDataError
from bundle.metrics import classification_metrics


def _brute_force_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """DeLong et al. 1988 written out pair by pair: AUCs, and the variance of their difference from the
    structural components V10 (per positive), V01 (per negative), S = their sample covariances."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def psi(x: float, z: float) -> float:
        return 1.0 if x > z else 0.5 if x == z else 0.0

    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v10 = np.asarray([np.mean([psi(s[i], s[j]) for j in neg]) for i in pos])
        v01 = np.asarray([np.mean([psi(s[i], s[j]) for i in pos]) for j in neg])
        return v10, v01

    (a10, a01), (b10, b01) = components(a), components(b)
    s10 = np.cov(np.stack([a10, b10]))  # 1 / (m - 1) sums of products
    s01 = np.cov(np.stack([a01, b01]))
    cov = s10 / len(pos) + s01 / len(neg)
    return a10.mean(), b10.mean(), cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], cov[0, 0]


def _scores(y: np.ndarray, probs: np.ndarray, patients: list[str] | None = None, mask=None) -> ImageScores:
    y = y.reshape(len(y), -1)
    return ImageScores([f"img{i}" for i in range(len(y))], patients or [], y, mask, probs.reshape(-1, *y.shape),
                       [f"c{c}" for c in range(y.shape[1])])


def test_auc_components_are_the_pairwise_shares_and_give_sklearns_auc():
    generator = np.random.default_rng(0)
    y = (np.arange(23) % 3 == 0).astype(int)
    s = np.round(generator.normal(size=23) + y, 1)  # rounded: ties between positives and negatives
    auc, v10, v01 = auc_components(y, s)
    pos, neg = s[y == 1], s[y == 0]
    hand10 = [np.mean([(p > n) + 0.5 * (p == n) for n in neg]) for p in pos]
    hand01 = [np.mean([(p > n) + 0.5 * (p == n) for p in pos]) for n in neg]
    np.testing.assert_allclose(v10[0], hand10)
    np.testing.assert_allclose(v01[0], hand01)
    assert auc[0] == pytest.approx(roc_auc_score(y, s)) == pytest.approx(np.mean(hand01))


def test_delong_per_class_equals_the_brute_force_structural_components():
    generator = np.random.default_rng(1)
    y = np.r_[np.ones(9), np.zeros(14)].astype(int)
    a = np.round(generator.normal(size=23) + 1.2 * y, 1)
    b = np.round(0.6 * a + generator.normal(size=23) * 0.8 + 0.3 * y, 1)  # correlated with a, with ties
    auc_a, auc_b, variance, variance_a = _brute_force_delong(y, a, b)
    result = delong_test(_scores(y, a), _scores(y, b))
    one = result["per_class"]["c0"]
    assert one["auc_a"] == pytest.approx(auc_a) and one["auc_b"] == pytest.approx(auc_b)
    assert one["se"] == pytest.approx(math.sqrt(variance), rel=1e-9)
    assert one["z"] == pytest.approx((auc_a - auc_b) / math.sqrt(variance))
    assert one["p"] == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(one["z"]) / math.sqrt(2)))))
    # one class: the macro test is the class's own
    assert result["macro"]["se"] == pytest.approx(one["se"]) and result["macro"]["classes"] == 1
    # a model against a constant: the variance of the difference is the model's own DeLong variance
    flat = delong_test(_scores(y, a), _scores(y, np.zeros(23)))["per_class"]["c0"]
    assert flat["se"] == pytest.approx(math.sqrt(variance_a))


def test_delong_on_hanley_and_mcneils_published_ct_ratings():
    """Hanley & McNeil, Radiology 1982, table 1: five-point ratings of 109 CT images (58 normal, 51 abnormal);
    the published area is 0.893 with standard error 0.032 (their approximation; DeLong's estimate is close)."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.concatenate([np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)])
    y = np.r_[np.zeros(sum(normal)), np.ones(sum(abnormal))].astype(int)
    result = delong_test(_scores(y, ratings.astype(float)), _scores(y, np.zeros(len(y))))["per_class"]["c0"]
    assert round(result["auc_a"], 3) == 0.893
    assert result["se"] == pytest.approx(0.032, abs=0.003)


def test_macro_delong_counts_the_covariance_of_classes_that_share_images():
    generator = np.random.default_rng(2)
    n = 60
    y = np.stack([generator.integers(0, 2, n), generator.integers(0, 2, n)], axis=1)
    a = y + generator.normal(size=(n, 2))
    b = 0.5 * y + generator.normal(size=(n, 2))
    result = delong_test(_scores(y, a), _scores(y, b))
    per_class = result["per_class"]
    assert result["macro"]["difference"] == pytest.approx(np.mean([c["difference"] for c in per_class.values()]))
    # independent classes: the macro variance is close to the mean of the two variances over 2
    independent = (per_class["c0"]["se"] ** 2 + per_class["c1"]["se"] ** 2) / 4
    assert result["macro"]["se"] ** 2 == pytest.approx(independent, rel=0.35)
    # the same class twice: fully correlated, the macro variance is the class's own
    same = delong_test(_scores(np.repeat(y[:, :1], 2, axis=1), np.repeat(a[:, :1], 2, axis=1)),
                       _scores(np.repeat(y[:, :1], 2, axis=1), np.repeat(b[:, :1], 2, axis=1)))
    assert same["macro"]["se"] == pytest.approx(per_class["c0"]["se"])
    # images of one patient are summed: every image twice, as one patient, gives the same test as once
    twice = delong_test(_scores(np.repeat(y, 2, axis=0), np.repeat(a, 2, axis=0), [str(i // 2) for i in range(2 * n)]),
                        _scores(np.repeat(y, 2, axis=0), np.repeat(b, 2, axis=0), [str(i // 2) for i in range(2 * n)]))
    assert twice["macro"]["se"] == pytest.approx(result["macro"]["se"], rel=0.05)


def test_macro_auc_is_the_metrics_macro_auc_with_masks_and_ties():
    generator = np.random.default_rng(3)
    labels = generator.integers(0, 2, (40, 4)).astype(float)
    labels[:, 3] = 0  # a class without positives is left out
    mask = (generator.random((40, 4)) > 0.2).astype(float)
    probs = np.round(generator.random((3, 40, 4)), 1)
    ours = macro_auc(labels, mask, probs)
    for k in range(3):
        expected = classification_metrics(labels, probs[k], mask, "multilabel", list("abcd"))["scalars"]["auc_macro"]
        assert ours[k] == pytest.approx(expected)


def test_paired_bootstrap_pairs_images_resamples_patients_and_averages_runs():
    generator = np.random.default_rng(4)
    n = 80
    y = generator.integers(0, 2, (n, 3))
    a = y + generator.normal(size=(2, n, 3))  # two runs (seeds)
    b = 0.7 * y + generator.normal(size=(1, n, 3))
    result = paired_bootstrap(_scores(y, a), _scores(y, b), resamples=300)
    expected = macro_auc(y, np.ones_like(y), a).mean() - macro_auc(y, np.ones_like(y), b).mean()
    assert result["difference"] == pytest.approx(expected)
    assert result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["images"] == n and result["runs_a"] == 2 and result["runs_b"] == 1
    # the same model on both sides: every draw gives zero
    same = paired_bootstrap(_scores(y, a), _scores(y, a), resamples=50)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    # each image twice under one patient: the same draws of patients, the same interval (an image-level
    # bootstrap would treat the copies as new evidence and narrow it)
    patients = [str(i // 2) for i in range(2 * n)]
    twice = paired_bootstrap(_scores(np.repeat(y, 2, axis=0), np.repeat(a, 2, axis=1), patients),
                             _scores(np.repeat(y, 2, axis=0), np.repeat(b, 2, axis=1), patients), resamples=300)
    assert twice["patients"] == n and twice["images"] == 2 * n
    assert (twice["ci_low"], twice["ci_high"]) == pytest.approx((result["ci_low"], result["ci_high"]))
    copies = paired_bootstrap(_scores(np.repeat(y, 2, axis=0), np.repeat(a, 2, axis=1)),
                              _scores(np.repeat(y, 2, axis=0), np.repeat(b, 2, axis=1)), resamples=300)
    assert copies["ci_high"] - copies["ci_low"] < 0.85 * (result["ci_high"] - result["ci_low"])


def test_models_are_paired_on_the_images_both_scored_and_must_agree_on_labels():
    y = np.tile([0, 1], 10)
    a = _scores(y, y + np.linspace(0, 1, 20))
    b = _scores(y, np.linspace(0, 1, 20)).select([f"img{i}" for i in range(5, 20)][::-1])
    result = compare(a, b, resamples=20)
    assert result["images"] == 15
    wrong = _scores(1 - y, np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match="labels differ"):
        compare(a, wrong, resamples=5)


def test_criteria_name_each_target():
    assert criteria(0.033, 0.005, (-0.010, 0.076)) == {"gain >= +0.03": True, "gain > 2x seed std": True,
                                                       "interval excludes 0": False}
    assert criteria(0.02, 0.02, (0.001, 0.04)) == {"gain >= +0.03": False, "gain > 2x seed std": False,
                                                   "interval excludes 0": True}
    assert criteria(0.05, None, None)["gain > 2x seed std"] is None


def test_per_image_files_round_trip_and_name_their_problems(tmp_path):
    labels = np.asarray([[1, 0], [0, 1], [1, 1]], float)
    mask = np.asarray([[1, 1], [1, 0], [1, 1]], float)
    probs = np.asarray([[0.9, 0.1], [0.2, 0.123456789], [0.7, 0.6]])
    write_per_image(tmp_path / "per_image.csv", ["a.png", "b.png", "c.png"], ["p1", "p1", "p2"],
                    {"": (labels, mask, probs)}, {"": ["Mass", "Nodule"]})
    scores = read_per_image(tmp_path)
    assert scores.images == ["a.png", "b.png", "c.png"] and scores.patient_ids == ["p1", "p1", "p2"]
    assert scores.class_names == ["Mass", "Nodule"]
    np.testing.assert_array_equal(scores.mask, mask)
    np.testing.assert_allclose(scores.probs[0], probs)
    with pytest.raises(CXRDataError, match="no scores of head 'mlct/'"):
        read_per_image(tmp_path / "per_image.csv", head="mlct/")
    with pytest.raises(CXRDataError, match="no per-image scores"):
        read_per_image(tmp_path / "elsewhere")
    assert ImageScores.stack([scores, scores.select(["c.png", "a.png"])]).images == ["a.png", "c.png"]


def test_seeds_with_their_own_test_sets_are_resampled_independently_and_averaged():
    from bundle.compare import delong_sets, paired_bootstrap_sets

    generator = np.random.default_rng(5)
    sets = []
    for _ in range(2):
        y = generator.integers(0, 2, (60, 2))
        sets.append((_scores(y, y + generator.normal(size=(60, 2))), _scores(y, 0.5 * y + generator.normal(size=(60, 2)))))
    combined = paired_bootstrap_sets(sets, resamples=300)
    alone = [paired_bootstrap(a, b, resamples=300) for a, b in sets]
    assert combined["difference"] == pytest.approx(np.mean([r["difference"] for r in alone]))
    assert combined["images"] == 120 and combined["sets"] == 2
    # the mean of two independent differences is known more precisely than either
    width = combined["ci_high"] - combined["ci_low"]
    assert width < min(r["ci_high"] - r["ci_low"] for r in alone)
    delong = delong_sets(sets)["macro"]
    singles = [delong_test(a, b)["macro"]["se"] for a, b in sets]
    assert delong["se"] == pytest.approx(math.sqrt(sum(v ** 2 for v in singles)) / 2)


def test_per_image_scores_name_the_rows_and_leave_out_unreadable_images(tmp_path):
    """bundle.handlers.PerImageScores: the key metric's rows are named from the evaluated records in loader order,
    less the images the loader could not read (their batch 'error' is set)."""
    from types import SimpleNamespace

    import torch

    from bundle.handlers import PerImageScores

    records = [{"image": f"/data/{i}.png", "patient_id": f"p{i // 2}"} for i in range(5)]
    handler = PerImageScores(tmp_path, records)
    engine = SimpleNamespace(state=SimpleNamespace())
    handler._reset(engine)
    for batch in ({"image": torch.zeros(3, 1, 4, 4), "error": ["", "/data/1.png: unreadable", ""]},
                  {"image": torch.zeros(2, 1, 4, 4), "error": ["", ""]}):
        engine.state.batch = batch
        handler._collect(engine)
    kept = np.asarray([[0.1], [0.3], [0.4], [0.5]])  # the four readable images' probabilities, in order
    metric = SimpleNamespace(scored_heads=lambda: {"": (np.asarray([[0.0], [1.0], [0.0], [1.0]]), np.ones((4, 1)), kept,
                                                        ["Mass"])})
    engine.state.classification_metric = metric
    handler(engine)
    scores = read_per_image(tmp_path)
    assert scores.images == ["/data/0.png", "/data/2.png", "/data/3.png", "/data/4.png"]
    assert scores.patient_ids == ["p0", "p1", "p1", "p2"]
    np.testing.assert_allclose(scores.probs[0], kept)
