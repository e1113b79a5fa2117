"""The benchmark scripts run end to end on tiny generated data and write what they promise."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO_ROOT


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_takd_writes_table_1_and_per_class_table_2(tmp_path, capsys):
    out = tmp_path / "takd.json"
    code = _load("benchmark_takd").main([
        "--dataset", "synthetic_binary", "--seeds", "1", "--image_size", "32", "--batch_size", "8",
        "--teacher_epochs", "1", "--assistant_epochs", "1", "--student_epochs", "1",
        "--work_dir", str(tmp_path / "work"), "--out", str(out),
        "--models", "teacher", "student from teacher",
        "--set", 'dataset_options={"num_images": 24, "source_size": 64}', 'teacher_members=["efficientnet-b0"]',
        "temperature=30",
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"teacher", "student from teacher"}
    assert report["settings"]["set"][-1] == "temperature=30"
    student = report["summary"]["student from teacher"]
    assert 0.0 <= student["accuracy"] <= 1.0 and student["parameters"] > 0
    assert len(student["per_class"]) == 2
    assert set(next(iter(student["per_class"].values()))) == {"precision", "recall", "f1"}
    printed = capsys.readouterr().out
    assert "| student from teacher |" in printed and "| class | precision | recall | F1 |" in printed


def test_benchmark_cache_reports_both_runs_and_a_speedup(tmp_path, capsys):
    out = tmp_path / "cache.json"
    code = _load("benchmark_cache").main([
        "--image_size", "32", "--batch_size", "8", "--epochs", "1", "--work_dir", str(tmp_path / "work"),
        "--out", str(out), "--set", 'dataset_options={"num_images": 24, "source_size": 64}',
        'teacher_members=["efficientnet-b0"]',
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"online", "cache (memory)"}
    assert all(len(r["epoch_seconds"]) == 1 and r["mean_epoch_seconds"] > 0 for r in report["results"].values())
    assert report["epoch_speedup"] > 0 and "speed-up" in capsys.readouterr().out
