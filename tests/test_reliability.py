"""Resume after SIGKILL, deterministic reruns, atomic checkpoints and the non-finite loss guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from ignite.engine import Engine

from bundle.handlers import ModelSaver, NonFiniteLossError, save_atomic
from conftest import REPO_ROOT, error_chain, run_bundle

# enough iterations per epoch that a kill after the first epoch lands inside the second
SMALL = ["--dataset_options", "{'num_images': 96, 'source_size': 64}", "--image_size", "48", "--batch_size", "8",
         "--max_epochs", "3", "--device", "cpu", "--num_workers", "0"]


def _train_command(output_dir) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/student.json",
            "--output_dir", str(output_dir), *SMALL]


def _run(output_dir) -> str:
    result = subprocess.run(_train_command(output_dir), cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    _run(tmp_path / "straight")

    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "last.pt"
    process = subprocess.Popen(_train_command(killed), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # somewhere in epoch 2 or 3
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model_final.pt").exists()
    done = torch.load(checkpoint, weights_only=True)["trainer"]["epoch"]
    assert 1 <= done < 3

    output = _run(killed)  # the same command again
    assert f"resumed from {checkpoint}: epoch {done}" in (killed / "log.txt").read_text()
    # one true line about where training goes on, not Ignite's "resuming from iteration 0, epoch 0" before it
    assert f"epoch {done}, iteration" in output and f"done; training epochs {done + 1}-3" in output
    assert "resuming from iteration 0, epoch 0" not in output
    straight, resumed = _weights(tmp_path / "straight" / "model_final.pt"), _weights(killed / "model_final.pt")
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "straight", killed)]
    assert metrics[0] == metrics[1]


def test_two_runs_with_one_seed_give_identical_metrics(tmp_path):
    tiny = {"dataset_options": {"num_images": 32, "source_size": 64}, "image_size": 32, "batch_size": 8,
            "max_epochs": 2, "device": "cpu", "sampling": "oversample"}
    for name in ("a", "b"):
        run_bundle("configs/student.json", "training", tmp_path / name, **tiny)
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    assert a == b
    for name, value in _weights(tmp_path / "a" / "model_final.pt").items():
        assert torch.equal(value, _weights(tmp_path / "b" / "model_final.pt")[name]), name


def test_best_model_is_never_replaced_by_a_worse_one_after_resume(tmp_path):
    network = torch.nn.Linear(2, 1)
    saver = ModelSaver(network, tmp_path / "model.pt", key_metric="auc_macro")
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.metrics = 1, {"auc_macro": float("nan")}  # undefined: saved while nothing is
    saver(engine)
    assert (tmp_path / "model.pt").is_file() and saver.best_epoch == 1
    engine.state.epoch, engine.state.metrics = 1, {"auc_macro": 0.9}
    saver(engine)
    saved = _weights(tmp_path / "model.pt")

    resumed = ModelSaver(network, tmp_path / "model.pt", key_metric="auc_macro")
    resumed.load_state_dict(saver.state_dict())
    with torch.no_grad():
        network.weight.add_(1.0)
    for epoch, score in ((2, 0.8), (3, float("nan"))):
        engine.state.epoch, engine.state.metrics = epoch, {"auc_macro": score}
        resumed(engine)
    assert torch.equal(_weights(tmp_path / "model.pt")["weight"], saved["weight"])
    engine.state.epoch, engine.state.metrics = 4, {"auc_macro": 0.95}
    resumed(engine)
    assert resumed.best_epoch == 4 and torch.equal(_weights(tmp_path / "model.pt")["weight"], network.weight)


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "model.pt"
    save_atomic({"w": torch.ones(2)}, path)
    with pytest.raises(Exception):
        save_atomic({"w": lambda: None}, path)  # cannot be pickled: fails half-way
    assert torch.equal(_weights(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # ordinary permissions, not mkstemp's


def test_non_finite_loss_stops_with_the_iteration_and_the_term(tmp_path):
    with pytest.raises(Exception) as info:
        run_bundle("configs/student.json", "training", tmp_path, dataset_options={"num_images": 32},
                   image_size=32, batch_size=8, max_epochs=2, device="cpu", learning_rate=1e30)
    chain = error_chain(info.value)
    found = [e for e in chain if isinstance(e, NonFiniteLossError)]
    assert found, f"no NonFiniteLossError in {chain}"
    message = str(found[0])
    assert "iteration" in message and "hard=" in message
    assert not (tmp_path / "model_final.pt").exists()


def test_a_checkpoint_without_the_distiller_of_a_plain_stage_resumes(tmp_path):
    """0.5.0 kept no 'distiller' entry for a stage without a teacher; NoTeacher has nothing to keep."""
    from bundle.distill import NoTeacher
    from bundle.handlers import ResumeCheckpoint
    from bundle.losses import HardLabelLoss
    from bundle.networks import ThreeConvStudent

    network = ThreeConvStudent(in_channels=1, out_channels=2)
    path = tmp_path / "last.pt"
    torch.save({"network": network.state_dict(), "trainer": {"epoch": 2, "iteration": 8, "max_epochs": 4}}, path)
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 4
    handler = ResumeCheckpoint(path, {"network": network, "distiller": NoTeacher(network, HardLabelLoss("multiclass"))})
    handler.load(engine)
    assert handler.resumed_from == 2 and engine.state.iteration == 8
