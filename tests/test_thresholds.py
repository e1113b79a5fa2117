"""Per-class decision thresholds: chosen on validation, kept with the model, used by every consumer of a prediction."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from bundle.handlers import PredictionWriter
from bundle.metrics import classification_metrics
from bundle.thresholds import (
    checkpoint_thresholds,
    choose_thresholds,
    class_thresholds,
    thresholds_path,
    write_thresholds_file,
)
from conftest import REPO_ROOT, require_shared, run_bundle

NAMES = ["rare", "common"]


def _scores(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < [0.05, 0.3]).astype(float)
    probabilities = np.clip(0.15 * labels + 0.35 * rng.random((n, 2)), 0, 1)  # overlapping, all below 0.5
    return labels, probabilities


def _brute_force(y: np.ndarray, p: np.ndarray, score) -> float:
    """The best value of ``score(sensitivity, specificity, precision)`` over every candidate threshold."""
    best = -1.0
    for t in np.unique(p):
        flagged = p >= t
        tp, fp = (flagged & (y > 0)).sum(), (flagged & (y == 0)).sum()
        sensitivity, specificity = tp / (y > 0).sum(), 1 - fp / (y == 0).sum()
        best = max(best, score(sensitivity, specificity, tp / flagged.sum()))
    return best


@pytest.mark.parametrize("rule", ["f1", "youden"])
def test_each_rule_picks_the_best_threshold_of_its_criterion(rule):
    labels, probabilities = _scores()
    chosen = choose_thresholds(labels, probabilities, None, NAMES, rule)
    for c, name in enumerate(NAMES):
        entry, y, p = chosen[name], labels[:, c], probabilities[:, c]
        flagged = p >= entry["threshold"]
        assert entry["sensitivity"] == pytest.approx((flagged & (y > 0)).sum() / (y > 0).sum())  # what p >= t gives
        assert entry["specificity"] == pytest.approx(1 - (flagged & (y == 0)).sum() / (y == 0).sum())
        if rule == "youden":
            assert entry["sensitivity"] + entry["specificity"] - 1 == pytest.approx(
                _brute_force(y, p, lambda se, sp, pr: se + sp - 1))
        else:
            assert entry["f1"] == pytest.approx(_brute_force(y, p, lambda se, sp, pr: 2 * pr * se / (pr + se)
                                                             if pr + se else 0.0))
        assert entry["threshold"] < 0.5  # every probability is: at 0.5 nothing would ever be flagged


def test_min_sensitivity_and_classes_without_positives():
    labels, probabilities = _scores(1)
    free = choose_thresholds(labels, probabilities, None, NAMES, "f1")
    screening = choose_thresholds(labels, probabilities, None, NAMES, "f1", min_sensitivity=0.95)
    for name in NAMES:
        assert screening[name]["sensitivity"] >= 0.95
        assert screening[name]["threshold"] <= free[name]["threshold"]
    mask = np.ones_like(labels)
    mask[labels[:, 0] > 0, 0] = 0  # every positive of "rare" unknown: nothing to choose from
    kept = choose_thresholds(labels, probabilities, mask, NAMES, "youden")
    assert kept["rare"]["threshold"] == 0.5 and "no positive" in kept["rare"]["note"]
    with pytest.raises(ValueError, match="min_sensitivity"):
        choose_thresholds(labels, probabilities, None, NAMES, "f1", min_sensitivity=1.5)


def test_threshold_forms():
    assert class_thresholds(0.3, NAMES) == [0.3, 0.3]
    assert class_thresholds([0.1, 0.2], NAMES) == [0.1, 0.2]
    assert class_thresholds({"common": 0.2, "rare": 0.1}, NAMES) == [0.1, 0.2]
    with pytest.raises(ValueError, match="no value for"):
        class_thresholds({"rare": 0.1}, NAMES)
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        class_thresholds([0.1, 0.2, 0.3], NAMES)


def test_thresholds_file_belongs_to_its_checkpoint(tmp_path, caplog):
    checkpoint = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(2)}, checkpoint)
    labels, probabilities = _scores()
    chosen = choose_thresholds(labels, probabilities, None, NAMES, "f1")
    path = write_thresholds_file(checkpoint, chosen, "f1", None, epoch=3)
    assert path == tmp_path / "model.thresholds.json" == thresholds_path(checkpoint)
    content = json.loads(path.read_text())
    assert content["class_names"] == NAMES and content["epoch"] == 3 and content["rule"] == "f1"
    assert checkpoint_thresholds(checkpoint, NAMES) == {n: chosen[n]["threshold"] for n in NAMES}

    caplog.set_level(logging.INFO, logger="bundle.thresholds")
    assert checkpoint_thresholds(checkpoint, ["other", "classes"]) == 0.5
    assert "is for classes" in caplog.text
    caplog.clear()
    torch.save({"weight": torch.zeros(2)}, checkpoint)  # retrained: the file describes another model
    assert checkpoint_thresholds(checkpoint, NAMES) == 0.5
    assert "SHA-256 differs" in caplog.text
    caplog.clear()
    path.unlink()  # an older checkpoint, without thresholds: 0.5, and the log says so
    assert checkpoint_thresholds(checkpoint, NAMES) == 0.5
    assert "has no decision thresholds" in caplog.text and "cut at 0.5" in caplog.text
    caplog.clear()
    assert checkpoint_thresholds(checkpoint, NAMES, task="multiclass") == 0.5 and not caplog.text  # arg-max


def test_prediction_writer_flags_each_class_at_its_threshold(tmp_path):
    writer = PredictionWriter(tmp_path, NAMES, threshold={"rare": 0.1, "common": 0.4})
    writer.add("a.png", [0.12, 0.3])
    writer.add("b.png", [0.05, 0.45])
    writer.write()
    rows = {row["image"]: row for row in csv.DictReader((tmp_path / "predictions.csv").open())}
    assert rows["a.png"]["predicted"] == "rare" and rows["b.png"]["predicted"] == "common"
    multiclass = PredictionWriter(tmp_path, NAMES, task="multiclass", threshold={"rare": 0.9, "common": 0.9})
    multiclass.add("c.png", [0.3, 0.7])
    assert multiclass.rows[0]["predicted"] == ["common"]  # arg-max, whatever the thresholds


def test_metrics_at_the_thresholds_and_at_half_for_comparison():
    labels, probabilities = _scores()
    thresholds = {n: e["threshold"] for n, e in choose_thresholds(labels, probabilities, None, NAMES).items()}
    result = classification_metrics(labels, probabilities, None, "multilabel", NAMES, thresholds,
                                    compare_threshold=0.5)
    scalars = result["scalars"]
    assert scalars["f1_macro"] > 0.2 and scalars["at0.5/f1_macro"] == 0.0  # nothing reaches 0.5
    assert result["thresholds"] == thresholds
    for c, name in enumerate(NAMES):
        (tn, fp), (fn, tp) = result["confusion_matrix"][name]
        flagged = probabilities[:, c] >= thresholds[name]
        assert tp == (flagged & (labels[:, c] > 0)).sum() and fp == (flagged & (labels[:, c] == 0)).sum()
        assert result["confusion_matrix_compare"][name][0][1] + result["confusion_matrix_compare"][name][1][1] == 0
    assert "at threshold 0.5 for every finding, for comparison" in result["report"]
    plain = classification_metrics(labels, probabilities, None, "multilabel", NAMES, 0.5, compare_threshold=0.5)
    assert "confusion_matrix_compare" not in plain and "at0.5/f1_macro" not in plain["scalars"]


# ----------------------------------------------------------------------------------------------
# the README's NIH model, shortened: it flags findings at about their prevalence, where 0.5 flags none


@pytest.fixture(scope="module")
def nih_model(tmp_path_factory):
    """The README's NIH training command (``--dataset nih --dataset_dir ../shared/data/nih14_subset``), shortened
    with ``--max_epochs 3 --image_size 32``."""
    data = require_shared("nih14_subset")
    out = tmp_path_factory.mktemp("student_nih")
    run_bundle("configs/student.json", "training", out, dataset="nih", dataset_dir=str(data), max_epochs=3,
               image_size=32, device="cpu")
    return data, out


@pytest.mark.timeout(900)
def test_nih_model_flags_findings_near_their_prevalence(nih_model, tmp_path):
    data, out = nih_model
    thresholds = json.loads((out / "model.thresholds.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    names = metrics["class_names"]
    assert thresholds["class_names"] == names and thresholds["rule"] == "f1"
    assert metrics["thresholds"] == thresholds["thresholds"] and metrics["threshold_rule"] == "f1"

    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
               "--dataset_dir", str(data / "images"), "--ckpt_path", str(out / "model.pt"), "--output_dir",
               str(tmp_path / "inference"), "--class_names", repr(names), "--image_size", "32",
               "--saliency_enabled", "false", "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "inference" / "predictions.json").read_text())
    probabilities = np.array([[row["probabilities"][n] for n in names] for row in rows])
    flagged = np.array([[n in row["predicted"] for n in names] for row in rows])
    cut = np.array([thresholds["thresholds"][n] for n in names])
    tie = np.abs(probabilities - cut) < 1e-6  # a validation image's own probability, recomputed in another batch
    assert (flagged == (probabilities >= cut))[~tie].all()

    from bundle.data import load_splits

    splits = load_splits("nih", data)
    prevalence = np.mean([record["label"] for record in splits.all])
    rate = flagged.mean()
    print(f"NIH subset: finding prevalence {prevalence:.3f}, flagged at the thresholds {rate:.3f}, "
          f"at 0.5 {(probabilities >= 0.5).mean():.3f}")
    assert (probabilities >= 0.5).mean() < prevalence / 10  # what one 0.5 for every class did: next to nothing
    assert prevalence / 4 <= rate <= 4 * prevalence  # at the thresholds: the order of the prevalence
    printed = result.stdout + result.stderr
    assert "decision thresholds of" in printed and "resuming from iteration 0" not in printed
    summary = [line for line in result.stdout.splitlines() if line.startswith("cxr-distill: inference")]
    assert summary and "at the model's thresholds" in summary[0] and "scripts/export_bundle.py" in summary[0]


@pytest.mark.timeout(900)
def test_nih_evaluation_reports_the_thresholds_and_half(nih_model):
    data, out = nih_model
    run_bundle(["configs/student.json", "configs/evaluate.json"], "evaluating", out, dataset="nih",
               dataset_dir=str(data), image_size=32, device="cpu", bootstrap_resamples=0)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    chosen = json.loads((out / "model.thresholds.json").read_text())["thresholds"]
    assert metrics["thresholds_used"] == chosen and metrics["compare_threshold"] == 0.5
    assert set(metrics["confusion_matrix_compare"]) == set(chosen) and "at0.5/f1_macro" in metrics
    assert metrics["f1_macro"] > metrics["at0.5/f1_macro"]
    assert (out / "eval" / "confusion_tables_at_0.5.png").is_file()
    assert "for comparison" in (out / "eval" / "report.txt").read_text()


@pytest.mark.timeout(900)
def test_exported_bundle_and_deploy_app_use_the_thresholds(nih_model, tmp_path):
    from bundle.deploy.classifier import classify
    from bundle.deploy.dicom_input import read_chest_radiograph
    from bundle.deploy.model import load_bundle
    from bundle.export import export_bundle

    data, out = nih_model
    names = json.loads((out / "metrics.json").read_text())["class_names"]
    chosen = json.loads((out / "model.thresholds.json").read_text())["thresholds"]
    result = export_bundle(out / "model.pt", tmp_path / "export", overrides={"class_names": names, "image_size": 32},
                           zip_bundle=False, download_schema=False,
                           schema=require_shared("../monai/meta_schema_20240725.json"))
    config = json.loads((result.bundle_dir / "configs" / "inference.json").read_text())
    assert config["threshold"] == chosen == result.thresholds
    model = load_bundle(result.bundle_dir, device="cpu", overrides={"saliency_enabled": False})
    assert model.threshold == [chosen[n] for n in names]
    answer = classify(model, read_chest_radiograph(require_shared("dicom/chest_cr_monochrome1.dcm")))
    assert answer.positive == [n for n in names if answer.probabilities[n] >= chosen[n]]
