"""--tracking configs/mlflow.json: parameters, every loss term, every validation metric and the artifacts, read back from MLflow."""

from __future__ import annotations

import pytest
from bundle.stages import stage_configs
from conftest import run_bundle

TINY = {"dataset_options": {"num_images": 24, "source_size": 64}, "image_size": 32, "batch_size": 8,
        "max_epochs": 2, "num_workers": 0, "device": "cpu"}


def test_mlflow_tracking_logs_parameters_loss_terms_metrics_and_artifacts(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "student"
    run_bundle("configs/student.json", "training", out, tracking="configs/mlflow.json", **TINY)

    db = out / "mlruns.db"
    assert db.is_file(), "MLflow's SQLite store is kept under output_dir"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("cxr-distill")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "trainer and validator log into one run"
    run = runs[0]
    params = run.data.params
    assert params["stage"] == "student" and params["image_size"] == "32" and params["max_epochs"] == "2"
    assert params["network"] == "ThreeConvStudent" and float(params["learning_rate"]) > 0
    assert params["loss_weights.hard"] == "1.0"

    def history(key):
        return [m.value for m in client.get_metric_history(run.info.run_id, key)]

    assert len(history("train_loss")) == 2 * 2, "the total loss every iteration (2 iterations x 2 epochs)"
    assert len(history("loss/hard")) == 2 * 2, "each loss term every iteration"
    assert len(history("loss_mean/hard")) == 2, "and its mean every epoch"
    for key in ("auc_macro", "accuracy", "f1_macro"):
        values = history(key)
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), key
    assert len(history("auc/Cardiomegaly")) == 2, "per-class metrics too (NaN where a tiny split has no positive)"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts
    assert {"model.pt", "metrics.json", "report.txt", "log.txt"} <= set(artifacts)
    assert run.info.status == "FINISHED"
    # TensorBoard logs as well
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_mlflow_tracking_of_a_distilled_student_logs_each_distillation_term(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    run_bundle(stage_configs("teacher"), "training", tmp_path / "teacher",
               **{**TINY, "max_epochs": 1, "teacher_members": ["efficientnet-b0"]})
    out = tmp_path / "student"
    run_bundle("configs/student.json", "training", out, tracking="configs/mlflow.json", teacher_members=["efficientnet-b0"],
               teacher_ckpt=str(tmp_path / "teacher" / "model.pt"), **{**TINY, "max_epochs": 1})
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    run = client.search_runs([client.get_experiment_by_name("cxr-distill").experiment_id])[0]
    terms = {"hard", "soft", "feature/conv1", "feature/conv2", "feature/conv3"}
    assert {f"loss/{t}" for t in terms} | {f"loss_mean/{t}" for t in terms} <= set(run.data.metrics)
    assert run.data.params["teacher_stage"] == "teacher" and run.data.params["temperature"] == "20.0"


def test_monai_builtin_mlflow_tracking_logs_the_training_loss(tmp_path):
    """MONAI's own --tracking mlflow (defaults written for decollated outputs) works on this trainer."""
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "student"
    run_bundle("configs/student.json", "training", out, tracking="mlflow", **TINY)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cxr-distill").experiment_id])  # the config's id
    losses = [m.value for run in runs for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) == 2 * 2 and all(0.0 < v < 10.0 for v in losses)
