"""The benchmark scripts run end to end on tiny generated data and write what they promise."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

import bundle.networks
from bundle.networks import EfficientNetEnsemble

from conftest import REPO_ROOT


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_takd_writes_table_1_and_per_class_table_2(tmp_path, capsys, monkeypatch):
    out = tmp_path / "takd.json"
    pretrained = tmp_path / "pretrained_teacher.pt"  # another class count: the heads stay as initialised
    torch.save(EfficientNetEnsemble(["efficientnet-b0"], out_channels=3).state_dict(), pretrained)
    reports = []  # what each stage's initialize loaded (config: $bundle.networks.load_initial_weights(...))
    load = bundle.networks.load_initial_weights
    monkeypatch.setattr(bundle.networks, "load_initial_weights",
                        lambda network, checkpoint: reports.append(load(network, checkpoint)))
    code = _load("benchmark_takd").main([
        "--init", f"teacher={pretrained}",
        "--dataset", "synthetic_binary", "--seeds", "1", "--image_size", "32", "--batch_size", "8",
        "--teacher_image_size", "48", "--teacher_epochs", "1", "--assistant_epochs", "1", "--student_epochs", "1",
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
    # the kept epoch's validation metrics, beside the test metrics (24 images: AUC may be undefined)
    assert 0.0 <= student["val_accuracy"] <= 1.0 and "val_auc_macro" in student
    # the student distilled from the 48 px teacher's own view: a 32 px view would have been refused
    assert "soft" in (tmp_path / "work" / "seed0" / "student_from_teacher" / "log.txt").read_text()
    # --init: the teacher started from the file (all but its 3-class head: 2 tensors kept as initialised)
    loaded = [r for r in reports if r is not None]
    assert len(reports) == 2 and len(loaded) == 1  # teacher and student ran initialize; only the teacher had --init
    assert sorted(loaded[0].skipped) == ["members.0._fc.bias", "members.0._fc.weight"] and len(loaded[0].loaded) > 100
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


def test_benchmark_resolution_reports_both_heads_gains_and_localization(tmp_path, capsys):
    out = tmp_path / "resolution.json"
    micro = '{"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}'

    def run(resolution: str, *variants_and_flags: str) -> int:
        return _load("benchmark_resolution").main([
            "--dataset", "synthetic", "--resolutions", resolution, "--seeds", "1", "--epochs", "1",
            "--teacher_epochs", "1", "--teacher_size", "32", "--teacher_patch", "8", "--token_grid", "2",
            "--batch_size", "8", "--vit_size", micro, "--work_dir", str(tmp_path / "work"), "--out", str(out),
            "--bootstrap_resamples", "50", "--set", 'dataset_options={"num_images": 32, "source_size": 64}',
            "--variants", *variants_and_flags,
        ])

    code = run("16", "student (no KD)", "student + MLCAK")
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["summary"]) == {"32 px | teacher", "16 px | student (no KD)", "16 px | student + MLCAK"}
    for row in report["summary"].values():
        assert 0.0 <= row["mlct_auc"] <= 1.0 and row["phantoms_images"] > 0
        assert 0.0 <= row["phantoms_pointing_game"] <= 1.0 and 0.0 <= row["phantoms_iou"] <= 1.0
    assert report["gains"]["16 px"]["mlct_auc"]["seeds"] == 1
    for key in ("mlct_auc", "mcct_auc"):  # paired by image too: the same gain, with an interval over the test images
        gain = report["gains"]["16 px"][key]
        if gain["mean"] is None:  # 6 test images: a head's AUC may be undefined (one class only), then both are
            assert math.isnan(gain["paired"]["gain"])
            continue
        assert gain["paired"]["gain"] == pytest.approx(gain["mean"], abs=1e-5)
        assert gain["paired"]["ci_low"] <= gain["paired"]["gain"] <= gain["paired"]["ci_high"]
        assert gain["paired"]["images"] == report["runs"]["16 px | student (no KD)"][0]["test_images"]
    distilled = report["runs"]["16 px | student + MLCAK"][0]
    assert distilled["input_shape"] == [1, 16, 16] and "Nodule" in distilled["mlct_auc_per_finding"]
    printed = capsys.readouterr().out
    assert "| 16 px | student + MLCAK |" in printed and "pointing game" in printed
    assert "MLCT gain 95% CI (paired over images)" in printed

    # --resume: an ablation at one more resolution; the recorded teacher and students are kept, not retrained
    teacher_before = report["runs"]["32 px | teacher"]
    code = run("8", "MLCAK, last layer", "--resume")
    assert code == 0
    resumed = json.loads(out.read_text())
    assert resumed["runs"]["32 px | teacher"] == teacher_before
    assert set(resumed["summary"]) == {*report["summary"], "8 px | MLCAK, last layer"}
    assert len(resumed["commands"]) == 2 and "16 px" in resumed["gains"]


def test_benchmark_saliency_scores_grad_cam_and_teacher_student_agreement(tmp_path, capsys):
    out = tmp_path / "saliency.json"
    code = _load("benchmark_saliency").main([
        "--seeds", "1", "--image_size", "32", "--teacher_epochs", "1", "--student_epochs", "1", "--batch_size", "8",
        "--models", "teacher", "student alone", "student from teacher",
        "--work_dir", str(tmp_path / "work"), "--out", str(out),
        "--set", 'dataset_options={"num_images": 32, "source_size": 64}',
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert list(report["summary"]) == ["teacher", "student alone", "student from teacher"]
    for name, row in report["summary"].items():
        assert 0.0 <= row["auc_macro"] <= 1.0 and row["phantoms_gradcam_pairs"] > 0
        for method in ("gradcam", "gradcampp"):
            assert 0.0 <= row[f"phantoms_{method}_pointing_game"] <= 1.0 and 0.0 <= row[f"phantoms_{method}_iou"] <= 1.0
        assert ("agreement_gradcam_correlation" in row) == (name != "teacher")
    run = report["runs"]["student from teacher"][0]
    assert run["saliency_layer"] == "conv3" and run["agreement_with_teacher"]["gradcampp"]["pairs"] > 0
    printed = capsys.readouterr().out
    assert "| student from teacher | gradcam |" in printed and "correlation with the teacher" in printed


def test_benchmark_speed_reports_every_measurement_and_the_targets(tmp_path, capsys):
    from conftest import require_shared

    dicom = require_shared("dicom/chest_cr_monochrome1.dcm")
    out = tmp_path / "speed.json"
    cache = tmp_path / "cache.json"  # an earlier benchmark_cache.py result, embedded with --cache_from
    cache.write_text(json.dumps({"epoch_speedup": 2.5, "date": "2026-11-23", "command": "python scripts/...",
                                 "settings": {"stage": "student", "teacher": "teacher", "image_size": 128},
                                 "results": {"online": {"mean_epoch_seconds": 5.0},
                                             "cache (memory)": {"mean_epoch_seconds": 2.0}}}))
    tiny = ["--image_size", "32", "--repeats", "1", "--warmup", "0", "--batch_size", "2", "--dicom", str(dicom),
            "--out", str(out), "--work_dir", str(tmp_path / "work")]
    assert _load("benchmark_speed").main(["--networks", "student", "teacher", "--cache_from", str(cache), *tiny]) == 0
    first = json.loads(out.read_text())
    # --update measures another network into the same report and keeps the others
    assert _load("benchmark_speed").main(["--update", "--networks", "compact_student", "--cache", "skip", *tiny]) == 0
    report = json.loads(out.read_text())
    assert report["networks"]["teacher"] == first["networks"]["teacher"] and len(report["updates"]) == 1
    assert report["device"] == "cpu" and report["machine"]["cpu_count"] >= 1 and report["date"]
    assert list(report["networks"]) == ["teacher", "student", "compact_student"]  # registry order
    for result in report["networks"].values():
        assert result["image_size"] == 32 and result["parameters"] > 0 and result["gflops"] > 0
        assert result["latency_batch1"]["threads"] == 1 and len(result["latency_batch1"]["runs_ms"]) == 1
        assert result["throughput"]["batch_size"] == 2 and result["throughput"]["images_per_s"] > 0
        assert result["memory"]["batch2_peak_mib"] >= result["memory"]["model_loaded_mib"] > 0
        e2e = result["end_to_end"]
        assert e2e["median_ms"] > 0 and set(e2e["parts_median_ms"]) == {"read_preprocess", "predict_and_saliency"}
        assert e2e["explained_classes"] == 1
    assert report["networks"]["compact_student"]["end_to_end"]["saliency_layer"] == "head"
    assert report["teacher_cache"]["epoch_speedup"] == 2.5  # kept by the update
    status = {(row["network"], row["reference"]): row["status"] for row in report["targets"] if "reference" in row}
    assert status[("student", "teacher")] in ("PASS", "FAIL")
    assert status[("student", "teacher_paper")] == status[("compact_student", "densenet161")] == "not measured"
    latency = [row for row in report["targets"] if "required_ms" in row]
    assert latency[0]["status"] in ("PASS", "FAIL") and latency[0]["value"] > 0
    printed = capsys.readouterr().out
    assert "| compact_student | 32 px |" in printed and "compact_student end-to-end" in printed
    assert "| compact real-time student: MobileNetV3-Large 0.75 | `configs/compact_student.json` | 32 px |" in printed


def test_benchmark_scale_runs_every_phase_tiny_and_writes_targets(tmp_path, shared_data):
    """``scripts/benchmark_scale.py`` as docs/scale.md shortens it: two small NIH folders of the real label file's
    first rows and the real CheXNet predictions, linked to small generated PNGs (fast to decode)."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 48)[None, :] + np.linspace(0, 40, 48)[:, None]
    for i in range(6):
        Image.fromarray((ramp + rng.integers(0, 15, (48, 48))).astype(np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "scale_nih.json"
    code = _load("benchmark_scale").main([
        "--dataset", "nih", "--sizes", "1500,2500", "--images", str(images), "--max_train_batches", "2",
        "--max_val_batches", "2", "--uncached_batches", "1", "--augment_samples", "8", "--batch_size", "8",
        "--image_size", "32", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    small, large = report["runs"]
    assert (small["records"], large["records"]) == (1500, 2500)
    assert set(large["phases"]) == {"read", "split", "check", "join", "cache_train", "cache_validation", "augment",
                                    "epoch", "epoch_uncached", "validation"}
    assert large["phases"]["epoch"]["records"] == 16 and large["phases"]["cache_train"]["mode"] == "memory"
    assert large["phases"]["cache_train"]["bytes_per_record"] == 32 * 32 * 2  # float16 at the training size
    coverage = large["coverage"]  # the real CheXNet file covers part of NIH's first rows
    assert coverage["with_soft_targets"] + coverage["labels_alone"] == large["splits"]["train"]
    assert 0 < coverage["with_soft_targets"] < coverage["training_images"]
    names = [t["target"] for t in report["targets"]]
    assert any(n.startswith("epoch: time per record at 2,500 records") for n in names)
    assert all(t["status"] in ("PASS", "FAIL") and isinstance(t["value"], float) for t in report["targets"])
    assert not (tmp_path / "work" / "nih_2500").exists()  # the linked folders are removed
