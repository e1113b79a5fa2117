"""configs/multi_gpu_train.json: two processes (gloo on CPU) train a distilled student with DDP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bundle.data.balance import DistributedBalancedSampler, balanced_sampler
from bundle.distributed import average_gradients
from bundle.networks import ThreeConvStudent
from bundle.stages import stage_configs
from conftest import REPO_ROOT, run_bundle

TINY = {"dataset_options": {"num_images": 48, "source_size": 64}, "image_size": 32, "batch_size": 8,
        "num_workers": 0, "device": "cpu", "teacher_members": ["efficientnet-b0"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(**overrides) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


@pytest.mark.slow
def test_two_processes_train_a_distilled_student_with_ddp(tmp_path):
    run_bundle(stage_configs("teacher"), "training", tmp_path / "teacher", max_epochs=1, **TINY)
    out = tmp_path / "student"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
               "-m", "monai.bundle", "run", "training",
               "--config_file", "['configs/student.json','configs/multi_gpu_train.json']",
               *_cli(output_dir=str(out), max_epochs=2, sampling="oversample",
                     teacher_ckpt=str(tmp_path / "teacher" / "model.pt"), **TINY)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    # the first process wrote the results, once; checkpoints hold the plain student (no "module." prefix)
    state = torch.load(out / "model.pt", weights_only=True)
    ThreeConvStudent(in_channels=1, out_channels=5).load_state_dict(state)
    assert json.loads((out / "metrics.json").read_text())["auc_macro"] >= 0.0
    assert (out / "log.txt").read_text().count("Engine run finished") >= 1
    # only the first process logs and prints: one summary, one line per trainer epoch
    output = result.stdout + result.stderr
    assert output.count("cxr-distill: multilabel") == 1
    assert len(re.findall(r"CXRTrainer - INFO - Epoch\[1\] Complete", output)) == 1
    # each process took half of every (oversampled) epoch: half the iterations of a single process
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    train_size = int(re.search(r"train (\d+),", result.stdout).group(1))
    per_process = train_size // 2 // 8
    assert last["trainer"]["epoch"] == 2 and last["trainer"]["iteration"] == 2 * per_process
    assert "distiller" in last and any(k.startswith("adapters.") for k in last["distiller"])


def test_distributed_balanced_sampler_splits_one_draw_between_processes():
    weights = [1 / 8] * 8 + [1 / 2] * 2
    single = list(balanced_sampler([{"label": [1, 0]}] * 8 + [{"label": [0, 1]}] * 2, "multiclass", "oversample",
                                   seed=3))
    shares = [list(DistributedBalancedSampler(weights, 10, True, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 5
    assert [i for pair in zip(*shares) for i in pair] == single  # together: exactly one process's draw
    with pytest.raises(ValueError):
        balanced_sampler([{"label": [1, 0]}], "multiclass", "sometimes")


def _average_in_process(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        adapter = torch.nn.Conv2d(2, 3, 1)
        adapter.weight.grad = torch.full_like(adapter.weight, float(rank + 1))  # 1 on rank 0, 2 on rank 1
        adapter.bias.grad = torch.full_like(adapter.bias, float(10 * rank))
        average_gradients(adapter.parameters())
        results[rank] = (adapter.weight.grad.clone(), adapter.bias.grad.clone())
    finally:
        dist.destroy_process_group()


def test_adapter_gradients_are_averaged_across_processes():
    results = mp.Manager().dict()
    mp.spawn(_average_in_process, args=(_free_port(), results), nprocs=2, join=True)
    for rank in range(2):
        weight, bias = results[rank]
        assert torch.allclose(weight, torch.full_like(weight, 1.5)) and torch.allclose(bias, torch.full_like(bias, 5.0))


@pytest.mark.slow
def test_a_checkpoint_error_under_torchrun_reads_as_in_one_process(tmp_path):
    """Both processes miss the assistant checkpoint: the message is printed once, by the first process, with no
    rank's traceback, and torchrun's failure summary carries it (torch.distributed.elastic's error file)."""
    missing = tmp_path / "assistant" / "model.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
               "-m", "monai.bundle", "run", "training",
               "--config_file", "['configs/student.json','configs/multi_gpu_train.json']",
               *_cli(output_dir=str(tmp_path / "student"), max_epochs=1, assistant_ckpt=str(missing), **TINY)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CXR_DISTILL_TRACEBACK", None)
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    message = f"error: assistant checkpoint not found: '{missing}'. Train the assistant stage first"
    printed = [line for line in output.splitlines() if line.startswith(message)]
    assert len(printed) == 1, output[-4000:]
    assert "[rank0]" not in output and "[rank1]" not in output  # no process's traceback
    summary = output[output.index("Root Cause"):]
    assert f"traceback : {message}" in summary, summary
    assert "To enable traceback see" not in output
    assert not (tmp_path / "student" / "model.pt").exists()
