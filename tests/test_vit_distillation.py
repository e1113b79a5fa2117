"""MLCAK end to end: vit_teacher (32 px) -> vit_student (16 px), the ablations, evaluation and attention inference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from bundle.data.phantoms import PhantomSpec, render_phantom
from bundle.networks import CXRViT
from bundle.stages import stage_configs
from conftest import error_chain, loss_term_means, run_bundle

MICRO = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}
DATA = {"dataset_options": {"num_images": 24, "source_size": 64}, "batch_size": 8, "max_epochs": 1,
        "num_workers": 0, "device": "cpu"}
TEACHER = {**DATA, "image_size": 32, "patch_size": 8, "vit_size": MICRO}  # 4 x 4 tokens
# 16 px, 8 px patches: a 2 x 2 grid, so the teacher's 4 x 4 map is averaged down to it
STUDENT = {**DATA, "image_size": 16, "token_grid": 2, "vit_size": MICRO, "teacher_image_size": 32,
           "teacher_patch_size": 8, "teacher_vit_size": MICRO}


def _terms(workflow) -> dict[str, float]:
    return loss_term_means(workflow)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit_teacher")
    workflow = run_bundle(stage_configs("vit_teacher"), "training", out, **TEACHER)
    return out, workflow


def test_teacher_trains_both_heads_and_reports_both_macro_aucs(teacher):
    out, workflow = teacher
    assert set(_terms(workflow)) == {"hard/mlct", "hard/mcct"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"auc_macro", "mlct/auc_macro", "mcct/auc_macro", "mlct/auc/Nodule", "mcct/accuracy"} <= set(metrics)
    assert set(metrics["confusion_matrix"]) == {"mlct", "mcct"}
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["mcct_head.weight"].shape == (2, 32) and state["mlct_head.weight"].shape == (5, 32)


def test_student_distils_from_the_frozen_teacher_and_logs_every_term(teacher, tmp_path):
    teacher_dir, _ = teacher
    ckpt = teacher_dir / "model.pt"
    student = run_bundle(stage_configs("vit_student"), "training", tmp_path, teacher_ckpt=str(ckpt), **STUDENT)
    terms = _terms(student)
    assert set(terms) == {"hard/mlct", "hard/mcct", "distill/mlct", "distill/mcct", "distill/attention"}
    assert all(np.isfinite(v) and v >= 0 for v in terms.values())
    distiller = student.parser.get_parsed_content("distiller")
    assert distiller.teacher.network.image_size == 32 and distiller.student.image_size == 16
    # the frozen teacher is exactly its checkpoint after the student's training
    saved = torch.load(ckpt, weights_only=True)
    teacher_network = distiller.teacher.network
    assert all(torch.equal(value.cpu(), saved[name]) for name, value in teacher_network.state_dict().items())
    assert not teacher_network.training and not any(p.requires_grad for p in teacher_network.parameters())
    # the student's checkpoint holds the student alone
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(student.parser.get_parsed_content("network").state_dict())
    # the teacher saw the 32 px view of the augmented image, the student 16 px
    sample = student.parser.get_parsed_content("train#dataset")[0]
    assert tuple(sample["teacher_image"].shape) == (1, 32, 32) and tuple(sample["image"].shape) == (1, 16, 16)
    # and the test split evaluates with both heads (evaluate.json, as the benchmark runs it)
    run_bundle(stage_configs("vit_student", "configs/evaluate.json"), "evaluating", tmp_path, **STUDENT)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "test" and "mlct/auc_macro" in metrics and "mcct/auc_macro" in metrics


def test_ablations_last_layer_and_one_head(teacher, tmp_path):
    teacher_dir, _ = teacher
    student = run_bundle(stage_configs("vit_student"), "training", tmp_path, teacher_ckpt=str(teacher_dir / "model.pt"),
                         heads=1, attention_layers="last", **STUDENT)
    assert set(_terms(student)) == {"hard/mlct", "distill/mlct", "distill/attention"}
    assert student.parser.get_parsed_content("distiller").attention_layers == "last"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "mcct/auc_macro" in metrics  # derived from the findings (noisy-OR)
    assert student.parser.get_parsed_content("network").num_outputs == 5


def test_student_without_teacher_is_the_baseline(tmp_path):
    student = run_bundle(stage_configs("vit_student"), "training", tmp_path, **STUDENT)
    assert set(_terms(student)) == {"hard/mlct", "hard/mcct"}
    assert type(student.parser.get_parsed_content("distiller")).__name__ == "NoTeacher"
    assert "teacher_image" not in student.parser.get_parsed_content("train#dataset")[0]


def test_missing_teacher_checkpoint_names_the_vit_teacher_config(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(Exception) as info:
        run_bundle(stage_configs("vit_student"), "training", tmp_path, teacher_ckpt=str(missing), **STUDENT)
    found = [e for e in error_chain(info.value) if isinstance(e, FileNotFoundError)]
    assert found and "configs/vit_teacher.json" in str(found[0]) and "--teacher_ckpt" in str(found[0])


def test_vit_inference_writes_predictions_and_attention_maps(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for seed in range(3):
        image, _ = render_phantom(np.random.default_rng(seed), {"Cardiomegaly"}, PhantomSpec(image_size=80))
        Image.fromarray((image * 65535).astype(np.uint16)).save(folder / f"case{seed}.png")
    (folder / "empty.png").write_bytes(b"")
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    torch.save(CXRViT(image_size=28, patch_size=4, num_findings=5, size=MICRO).state_dict(), ckpt)
    out = tmp_path / "out"
    with pytest.raises(SystemExit):  # the empty file: exit status 3, the others written
        run_bundle(["configs/inference.json", "configs/vit_inference.json"], "run", out, dataset_dir=str(folder),
                   ckpt_path=str(ckpt), image_size=28, vit_size=MICRO, device="cpu")
    rows = {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader((out / "predictions.csv").open())}
    assert rows["empty.png"]["status"] == "error"
    for seed in range(3):
        row = rows[f"case{seed}.png"]
        assert row["status"] == "ok"
        assert float(row["Normal"]) + float(row["Abnormal"]) == pytest.approx(1.0, abs=1e-5)  # softmax pair
        raw = np.load(out / "saliency" / f"case{seed}.png_attention.npy")
        assert raw.shape == (28, 28) and raw.dtype == np.float32
        assert raw.mean() == pytest.approx(1 / 49, rel=1e-3)  # upsampled from a 7 x 7 map summing to 1
        assert (out / "saliency" / f"case{seed}.png_attention.png").is_file()
    assert not list((out / "saliency").glob("empty*"))
