"""The main job end to end: `monai.bundle run training --config_file configs/student.json`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from bundle.data import CXRDataError
from conftest import REPO_ROOT, error_chain, require_shared, run_bundle

TINY = {"dataset_options": {"num_images": 24}, "image_size": 32, "batch_size": 8, "max_epochs": 2, "num_workers": 0}


def run_student(output_dir, **overrides):
    return run_bundle("configs/student.json", "training", output_dir, **{**TINY, "device": "cpu", **overrides})


def test_student_trains_on_synthetic_default_and_writes_outputs(tmp_path):
    run_student(tmp_path)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model_final.pt").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc_macro", "accuracy", "f1_macro", "auc/Nodule", "auc/Cardiomegaly"):
        assert key in metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["split"] == "validation"
    assert "precision" in (tmp_path / "report.txt").read_text()
    assert "Epoch[1] Metrics" in (tmp_path / "log.txt").read_text()
    # the checkpoint is the student's state dict and loads back into the network
    from bundle.networks import ThreeConvStudent

    ThreeConvStudent(1, 5).load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    # the phantoms were cached under the output directory
    assert list((tmp_path / "cache").rglob("datalist.json"))
    # TensorBoard: every loss term each iteration, validation saliency each epoch, ROC at the best epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.out.tfevents.*"))),
                              size_guidance={"images": 0})
    events.Reload()
    assert {"loss/hard", "train_loss", "loss_mean/hard", "auc_macro"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Images("validation/saliency")] == [1, 2]
    best = json.loads((tmp_path / "metrics.json").read_text())["epoch"]
    assert best in [e.step for e in events.Images("validation/roc")]


def test_student_trains_on_real_pneumoniamnist_multiclass(tmp_path):
    npz_dir = require_shared("pneumoniamnist")
    run_student(tmp_path, dataset="pneumoniamnist", dataset_dir=str(npz_dir), image_size=28, max_images=64,
                max_epochs=1)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["class_names"]) == {"Normal", "Pneumonia"}
    assert len(metrics["confusion_matrix"]) == 2 and metrics["num_samples"] == 64


def test_unknown_dataset_is_reported_before_training(tmp_path):
    with pytest.raises(Exception) as info:
        run_student(tmp_path, dataset="imagenet")
    chain = error_chain(info.value)
    assert any(isinstance(e, CXRDataError) and "imagenet" in str(e) and "pneumoniamnist" in str(e) for e in chain)
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_readme_command_runs_as_a_cli(tmp_path):
    """The README's main command itself (shortened by command-line overrides)."""
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/student.json",
               "--output_dir", str(tmp_path), "--image_size", "32", "--max_epochs", "1", "--batch_size", "8",
               "--dataset_options", "{'num_images': 20}", "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "metrics.json").is_file()
    # off a terminal no progress bar: no carriage-return updates, one loss line per epoch
    output = result.stdout + result.stderr
    assert "\r" not in output and max(map(len, output.splitlines())) < 2000
    log = (tmp_path / "log.txt").read_text()
    assert log.count("Epoch[1] Metrics -- loss_mean/hard:") == 1 and "\r" not in log
    assert "training epochs 1-1 from the start" in log and "Engine run resuming from iteration 0, epoch 0" not in output


def test_evaluate_config_reports_the_test_split(tmp_path):
    run_student(tmp_path, dataset="synthetic_binary", dataset_options={"num_images": 40})
    workflow = run_bundle(["configs/student.json", "configs/evaluate.json"], "evaluating", tmp_path,
                          **{**TINY, "device": "cpu", "dataset": "synthetic_binary", "dataset_options": {"num_images": 40}})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    test_size = len(workflow.parser.get_parsed_content("data#splits").test)
    assert metrics["split"] == "test" and metrics["num_samples"] == test_size
    assert sum(map(sum, metrics["confusion_matrix"])) == test_size
    report = (tmp_path / "eval" / "report.txt").read_text()
    assert "Normal" in report and "95% bootstrap confidence intervals" in report
    for name in ("roc", "precision_recall", "confusion_matrix", "reliability"):  # multi-class: one matrix
        with Image.open(tmp_path / "eval" / f"{name}.png") as figure:
            assert figure.format == "PNG" and min(figure.size) >= 300, name
    for key in ("auc_macro", "accuracy", "f1_macro"):  # the test metric inside its bootstrap interval
        if metrics[key] is not None:
            assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
