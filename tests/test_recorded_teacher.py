"""A recorded teacher: distilling from a predictions file instead of a network, and NIH's real folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.data import CXRDataError, load_splits
from bundle.distill import TeacherOutputCache, read_teacher_predictions
from bundle.stages import stage_configs
from conftest import REPO_ROOT, error_chain, loss_term_means, require_shared, run_bundle

NIH_SUBSET = "nih14_subset"
CHEXNET = "nih14_subset/teacher_predictions/chexnet_densenet121.csv"
TINY = {"dataset_options": {"num_images": 24, "source_size": 64}, "image_size": 32, "batch_size": 8,
        "max_epochs": 1, "num_workers": 0, "device": "cpu"}


def _records(names: list[str]) -> list[dict]:
    return [{"image": f"/data/images/{name}", "label": [0.0, 1.0], "patient_id": name[:3]} for name in names]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_columns_match_the_vocabulary_and_probabilities_become_logits(tmp_path):
    file = tmp_path / "teacher.csv"
    pd.DataFrame({"Image Index": ["a.png", "b.png", "c.png"], "prob_Effusion": [0.2, 0.9, 0.5],
                  "prob_Pleural_Thickening": [0.01, 0.5, 0.3], "Patient Age": [50, 60, 70]}).to_csv(file, index=False)
    records = _records(["b.png", "a.png"])  # the file also has an image the training list does not use
    logits, available = read_teacher_predictions(file, records, ["Pleural Effusion", "Pleural Thickening"],
                                                 "multilabel")
    assert available.tolist() == [True, True]
    np.testing.assert_allclose(logits, [[_logit(0.9), 0.0], [_logit(0.2), _logit(0.01)]], rtol=1e-5, atol=1e-6)
    # logits are taken as they are; multi-class probabilities become log-probabilities
    pd.DataFrame({"image": ["a.png"], "logit_Effusion": [3.5], "logit_Pleural Thickening": [-2.0]}).to_csv(
        file, index=False)
    logits, _ = read_teacher_predictions(file, records[1:], ["Pleural Effusion", "Pleural Thickening"], "multilabel")
    np.testing.assert_allclose(logits, [[3.5, -2.0]])
    pd.DataFrame({"id": ["a"], "Normal": [0.25], "Pneumonia": [0.75]}).to_csv(file, index=False)  # by stem
    logits, _ = read_teacher_predictions(file, records[1:], ["No Finding", "Pneumonia"], "multiclass")
    np.testing.assert_allclose(logits, [[math.log(0.25), math.log(0.75)]], rtol=1e-6)


def test_every_misfit_is_named_before_training(tmp_path):
    file = tmp_path / "teacher.csv"
    classes = ["Pleural Effusion", "Cardiomegaly"]
    pd.DataFrame({"Image Index": ["a.png"], "prob_Effusion": [0.2], "prob_Mass": [0.1]}).to_csv(file, index=False)
    with pytest.raises(CXRDataError, match=r"do not match.*Mass.*Cardiomegaly") as info:
        read_teacher_predictions(file, _records(["a.png"]), classes, "multilabel")
    assert str(file) in str(info.value)
    pd.DataFrame({"Image Index": ["a.png", "b.png"], "Effusion": [0.2, "n/a"], "Cardiomegaly": [0.1, 0.3]}).to_csv(
        file, index=False)
    with pytest.raises(CXRDataError, match=r"row 2 .*'n/a' is not a number"):
        read_teacher_predictions(file, _records(["a.png"]), classes, "multilabel")
    pd.DataFrame({"name": ["a.png"], "Effusion": [0.2], "Cardiomegaly": [0.1]}).to_csv(file, index=False)
    with pytest.raises(CXRDataError, match="no image id column"):
        read_teacher_predictions(file, _records(["a.png"]), classes, "multilabel")
    pd.DataFrame({"image": ["a.png"], "prob_Effusion": [2.0], "prob_Cardiomegaly": [0.1]}).to_csv(file, index=False)
    with pytest.raises(CXRDataError, match="stated as probabilities"):
        read_teacher_predictions(file, _records(["a.png"]), classes, "multilabel")
    pd.DataFrame({"image": ["a.png", "a.png"], "Effusion": [0.2, 0.3], "Cardiomegaly": [0.1, 0.1]}).to_csv(
        file, index=False)
    with pytest.raises(CXRDataError, match="two rows for training image"):
        read_teacher_predictions(file, _records(["a.png"]), classes, "multilabel")


def test_images_without_a_row_are_an_error_or_left_out_of_the_soft_term(tmp_path):
    file = tmp_path / "teacher.csv"
    pd.DataFrame({"image": ["a.png", "c.png"], "Effusion": [0.2, 0.6]}).to_csv(file, index=False)
    records = _records(["a.png", "b.png", "c.png", "d.png"])
    with pytest.raises(CXRDataError, match=r"no teacher prediction for 2 of 4 training images, e\.g\. "
                                           r"/data/images/b\.png, /data/images/d\.png.*'skip'"):
        read_teacher_predictions(file, records, ["Pleural Effusion"], "multilabel")
    cache = TeacherOutputCache.from_predictions(file, records, ["Pleural Effusion"], "multilabel", missing="skip")
    assert cache.feature_names == frozenset() and len(cache) == 4
    out = cache.outputs({"image": torch.zeros(3, 1, 4, 4), "sample_index": torch.tensor([2, 1, 0])})
    assert out.mask.tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(out.logits[:, 0], torch.tensor([_logit(0.6), 0.0, _logit(0.2)]))


def _first_batch(workflow: ConfigWorkflow, size: int = 8) -> dict:
    dataset = workflow.parser.get_parsed_content("train#dataset")
    return {key: torch.stack([torch.as_tensor(dataset[i][key]) for i in range(size)])
            for key in ("image", "label", "label_mask", "sample_index")}


def _parse(config: str, output_dir, **overrides) -> ConfigWorkflow:
    import os

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        workflow = ConfigWorkflow(config_file=config, meta_file="configs/metadata.json", workflow_type="train",
                                  output_dir=str(output_dir), **overrides)
        workflow.initialize()
        workflow.parser.get_parsed_content("distiller")
    finally:
        os.chdir(cwd)
    return workflow


def test_recorded_predictions_give_the_live_teachers_soft_loss(tmp_path):
    """Record a live teacher with configs/inference.json, distil from the file: the same soft loss."""
    run_bundle(stage_configs("assistant"), "training", tmp_path / "assistant", teacher_predictions=None,
               teacher_stage=None, **TINY)  # a DenseNet121 trained on hard labels plays the teacher
    ckpt = tmp_path / "assistant" / "model.pt"
    # T = 1: at T = 20 an untrained pair's divergence is ~1e-7, below float32's resolution of BCE - H(q)
    live = _parse("configs/student.json", tmp_path / "live", assistant_ckpt=str(ckpt), augment=False, temperature=1.0,
                  loss_weights={"hard": 1.0, "soft": 1.0, "feature": 0.0}, **TINY)
    records = live.parser.get_parsed_content("data#splits").train
    # record it: inference.json with the teacher's network, on the training images, as a user would
    run_bundle("configs/inference.json", "run", tmp_path / "recorded",
               dataset_dir=[r["image"] for r in records], ckpt_path=str(ckpt), image_size=32,
               saliency_enabled=False, saliency_layer="features.denseblock4",
               network_def={"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1,
                            "out_channels": "$len(@class_names)"})
    predictions = tmp_path / "recorded" / "predictions.csv"
    assert pd.read_csv(predictions)["status"].eq("ok").all()
    recorded = _parse("configs/student.json", tmp_path / "from_file", teacher_predictions=str(predictions),
                      augment=False, temperature=1.0, loss_weights={"hard": 1.0, "soft": 1.0, "feature": 0.0}, **TINY)
    assert type(recorded.parser.get_parsed_content("distiller").teacher).__name__ == "TeacherOutputCache"

    batch = _first_batch(live)
    network = live.parser.get_parsed_content("network").eval()  # no dropout: one function for both
    torch.testing.assert_close(batch["image"], _first_batch(recorded)["image"])
    terms = {}
    for name, workflow in (("live", live), ("recorded", recorded)):
        distiller = workflow.parser.get_parsed_content("distiller")
        terms[name] = distiller.forward_train(batch, network)[1]
    assert set(terms["live"]) == set(terms["recorded"]) == {"hard", "soft"}
    torch.testing.assert_close(terms["recorded"]["soft"], terms["live"]["soft"], rtol=1e-4, atol=1e-6)
    assert terms["live"]["soft"].item() > 0


def test_feature_terms_need_a_live_teacher(tmp_path):
    file = tmp_path / "teacher.csv"
    workflow = _parse("configs/student.json", tmp_path / "probe", **TINY)
    records = workflow.parser.get_parsed_content("data#splits").train
    classes = workflow.parser.get_parsed_content("data#class_names")
    pd.DataFrame({"image": [r["image"] for r in records], **{c: 0.5 for c in classes}}).to_csv(file, index=False)
    with pytest.raises(Exception) as info:
        _parse("configs/student.json", tmp_path / "s", teacher_predictions=str(file), **TINY)
    message = " ".join(str(e) for e in error_chain(info.value))
    assert "feature" in message and "loss_weights#feature to 0" in message and "logits only" in message
    # as the user meets it: the last line of the command names the file and what to do
    import subprocess
    import sys

    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/student.json",
               "--teacher_predictions", str(file), "--output_dir", str(tmp_path / "cli"), "--device", "cpu",
               "--image_size", "32", "--dataset_options", '{"num_images": 24, "source_size": 64}']
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {file}: recorded predictions hold logits only") and "--loss_weights#feature 0" in last
    student = run_bundle("configs/student.json", "training", tmp_path / "s2", teacher_predictions=str(file),
                         loss_weights={"hard": 1.0, "soft": 1.0, "feature": 0.0}, temperature=4.0, **TINY)
    terms = loss_term_means(student)
    assert set(terms) == {"hard", "soft"}
    # MLCAK from recorded logits: the logit term, not the attention term, which needs a live ViT
    vit = {**TINY, "image_size": 16, "teacher_image_size": 16, "token_grid": 2, "vit_size": {"hidden_size": 16, "num_layers": 1,
                                                                            "num_heads": 2, "mlp_dim": 32}}
    with pytest.raises(Exception) as info:
        _parse(stage_configs("vit_student"), tmp_path / "v", teacher_predictions=str(file), **vit)
    assert "attention" in " ".join(str(e) for e in error_chain(info.value))
    student = run_bundle(stage_configs("vit_student"), "training", tmp_path / "v2", teacher_predictions=str(file),
                         loss_weights={"hard": 1.0, "mlct": 1.0, "mcct": 1.0, "attention": 0.0}, **vit)
    assert set(loss_term_means(student)) == {
        "hard/mlct", "hard/mcct", "distill/mlct"}


def test_nih_reader_reads_the_real_subset_folder():
    root = require_shared(NIH_SUBSET)
    splits = load_splits("nih", root, seed=0)
    assert splits.num_classes == 14 and splits.task == "multilabel"
    records = splits.train + splits.validation + splits.test
    assert len(records) == 471
    patients = [{r["patient_id"] for r in split} for split in (splits.train, splits.validation, splits.test)]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    boxed = [r for r in records if r.get("boxes")]
    assert len(boxed) == 10
    # the boxes are NIH's 1024 px grid scaled to the 512 px files
    table = pd.read_csv(root / "BBox_List_2017.csv")
    first = table.iloc[0]
    record = next(r for r in boxed if r["image"].endswith(first["Image Index"]))
    x, y, w, h = (float(v) for v in first.iloc[2:6])
    box = next(b["box"] for b in record["boxes"] if b["label"] == "Atelectasis")
    np.testing.assert_allclose(box, [x / 2, y / 2, (x + w) / 2, (y + h) / 2], rtol=1e-6)
    assert all(0 <= v <= 512 for b in boxed for item in b["boxes"] for v in item["box"])
    # RGBA files load as grey images of the file's size
    from bundle.data import load_cxr
    rgba = load_cxr(root / "images" / "00002578_000.png")
    assert rgba.shape == (512, 512) and rgba.dtype == np.float32 and 0.0 <= rgba.min() < rgba.max() <= 1.0


def test_the_real_chexnet_predictions_cover_the_nih_subset():
    root = require_shared(NIH_SUBSET)
    splits = load_splits("nih", root, seed=0)
    cache = TeacherOutputCache.from_predictions(require_shared(CHEXNET), splits.train, splits.class_names,
                                                splits.task)
    assert cache.available is None and len(cache) == len(splits.train)
    table = pd.read_csv(require_shared(CHEXNET)).set_index("Image Index")
    name = splits.train[0]["image"].rsplit("/", 1)[-1]
    column = splits.class_names.index("Pleural Effusion")
    expected = _logit(float(table.loc[name, "prob_Effusion"]))
    assert float(cache.logits[0, column]) == pytest.approx(expected, rel=1e-5)
    summary = json.dumps(splits.summary())
    assert "14 classes" in summary


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_recorded", REPO_ROOT / "scripts" / "benchmark_recorded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _external_folder(root, folder, rename: bool):
    """30 real NIH images of the development folder in a folder of their own (``rename``: under names that the
    recorded teacher's file has no row for, as a truly external set would be)."""
    import shutil

    table = pd.read_csv(root / "Data_Entry_2017_v2020.csv")
    (folder / "images").mkdir(parents=True)
    part = table.iloc[-30:].copy()
    sources = list(part["Image Index"])
    if rename:
        part["Image Index"] = [f"9{name[1:]}" for name in sources]
        part["Patient ID"] = [int(f"9{str(p)[1:]}") if len(str(p)) > 1 else 90000000 + int(p)
                              for p in part["Patient ID"]]
    part.to_csv(folder / "Data_Entry_2017_v2020.csv", index=False)
    for source, name in zip(sources, part["Image Index"]):
        shutil.copy(root / "images" / source, folder / "images" / name)
    return folder


def test_benchmark_tests_every_model_on_an_external_nih_folder_too(tmp_path, capsys):
    """scripts/benchmark_recorded.py with --external_dataset: a second NIH-format folder, built here from part of
    the real one, is tested in its own columns with its own intervals; every row of a table on the same images
    (--max_images caps the teacher's as the students'); each gain paired by image as well as by seed."""
    root = require_shared(NIH_SUBSET)
    external = _external_folder(root, tmp_path / "external", rename=False)
    out, figure = tmp_path / "recorded.json", tmp_path / "recorded.png"
    code = _benchmark_module().main([
        "--dataset_dir", str(root), "--teacher_predictions", str(require_shared(CHEXNET)), "--seeds", "1",
        "--epochs", "1", "--image_size", "32", "--batch_size", "16", "--max_images", "20",
        "--bootstrap_resamples", "20", "--no_localization", "--external_dataset", "nih",
        "--external_dataset_dir", str(external), "--models", "3-conv student alone",
        "3-conv student from recorded teacher", "--work_dir", str(tmp_path / "work"), "--out", str(out),
        "--figure", str(figure)])
    assert code == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert set(summary) == {"teacher (recorded predictions)", "3-conv student alone",
                            "3-conv student from recorded teacher"}
    # the external folder's 30 images, split 3 ways and capped at 20 per split: the same images in every row
    external_images = len(report["images"]["external"]["names"])
    assert 20 < external_images < 30 and len(report["images"]["test"]["names"]) == 20
    for name, row in summary.items():  # every model, the teacher included, on both test sets
        assert row["external_images"] == external_images and row["test_images"] == 20, name
        assert row["external_auc_macro_ci_low"] <= row["external_auc_macro"] <= row["external_auc_macro_ci_high"]
        assert 0.0 <= row["test_ece_macro"] <= 1.0
        for run in report["runs"][name]:  # every run's per-image probabilities, on the table's images
            assert len(run["test"]["probabilities"]) == 20 and all(p is not None for p in run["test"]["probabilities"])
    distilled = summary["3-conv student from recorded teacher"]
    assert "test_gain" in distilled and "external_gain" in distilled
    paired = distilled["test_gain_paired"]  # by image: the same number as by seed with one seed, and an interval
    assert paired["gain"] == pytest.approx(distilled["test_gain"], abs=1e-5)
    assert paired["ci_low"] <= paired["gain"] <= paired["ci_high"] and 0.0 <= paired["delong"]["p"] <= 1.0
    assert set(distilled["test_gain_criteria"]) == {"gain >= +0.03", "gain > 2x seed std", "interval excludes 0"}
    assert distilled["test_gain_criteria"]["gain > 2x seed std"] is None  # one seed: no seed spread to judge by
    printed = capsys.readouterr().out
    assert "gain 95% CI (paired over images)" in printed and "macro F1 (threshold 0.5)" in printed
    assert "| 3-conv student from recorded teacher | test (20 images) |" in printed
    assert figure.stat().st_size > 10_000


def test_benchmark_scores_the_students_on_an_external_folder_the_teacher_file_does_not_cover(tmp_path, capsys):
    """An external folder whose images the recorded teacher's file has no row for (a truly external set): the
    teacher row says so, and the student distilled from the file is scored on every external image."""
    root = require_shared(NIH_SUBSET)
    external = _external_folder(root, tmp_path / "external", rename=True)
    assert not set(pd.read_csv(external / "Data_Entry_2017_v2020.csv")["Image Index"]) & set(
        pd.read_csv(require_shared(CHEXNET))["Image Index"])
    out = tmp_path / "recorded.json"
    module = _benchmark_module()
    code = module.main([
        "--dataset_dir", str(root), "--teacher_predictions", str(require_shared(CHEXNET)), "--seeds", "1",
        "--epochs", "1", "--image_size", "32", "--batch_size", "16", "--max_images", "32",
        "--bootstrap_resamples", "10", "--no_localization", "--external_dataset", "nih",
        "--external_dataset_dir", str(external), "--models", "3-conv student from recorded teacher",
        "--work_dir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())["summary"]
    teacher, student = summary[module.TEACHER], summary["3-conv student from recorded teacher"]
    assert teacher["external_note"] == module.NOT_SCORED and "external_auc_macro" not in teacher
    assert teacher["test_images"] == 32
    assert student["external_images"] == 30 and 0.0 <= student["external_auc_macro"] <= 1.0
    printed = capsys.readouterr().out
    assert "not scored: the predictions file has no rows for these images" in printed


def _piece(tmp_path, name: str, runs: dict, **settings) -> str:
    """A partial report of scripts/benchmark_recorded.py as its JSON is written (two classes, 40 test images)."""
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 2, (40, 2)).astype(float)
    images = {"test": {"names": [f"img{i}.png" for i in range(40)], "patient_ids": [f"p{i}" for i in range(40)],
                       "labels": labels.tolist(), "masks": np.ones_like(labels).tolist()}}
    content = {"command": f"python scripts/benchmark_recorded.py ({name})", "dataset": "nih", "class_names": ["A", "B"],
               "split": {"seed": 0, "train": 10, "validation": 5, "test": 40},
               "settings": {"epochs": 30, "temperature": 4.0, "set": [], "ema_momentum": None, "models": [name],
                            "teacher_predictions": "teacher.csv", "bootstrap_resamples": 200, **settings},
               "images": images, "runs": {}}
    for model, (seed, strength) in runs.items():
        probs = np.clip(0.5 + strength * (labels - 0.5) + 0.3 * generator.normal(size=labels.shape), 0, 1)
        from sklearn.metrics import roc_auc_score
        auc = float(np.mean([roc_auc_score(labels[:, c], probs[:, c]) for c in range(2)]))
        content["runs"][model] = [{"seed": seed, "train_seconds": 1.0, "test": {
            "auc_macro": auc, "auc_macro_ci_low": auc - 0.1, "auc_macro_ci_high": auc + 0.1, "ece_macro": 0.1,
            "accuracy": 0.5, "f1_macro": 0.4, "num_samples": 40, "per_class_auc": {"A": auc, "B": auc},
            "per_class_ece": {"A": 0.1, "B": 0.1}, "probabilities": probs.round(6).tolist()}}]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(content))
    return str(path)


def test_merge_recomputes_the_paired_comparison_and_refuses_pieces_of_other_settings(tmp_path, capsys):
    module = _benchmark_module()
    alone = _piece(tmp_path, "alone", {"3-conv student alone": (0, 0.1)})
    distilled = _piece(tmp_path, "distilled", {"3-conv student from recorded teacher": (0, 0.5)},
                       ema_momentum=None, set=[])
    out = tmp_path / "table.json"
    assert module.main(["--merge", alone, distilled, "--out", str(out), "--bootstrap_resamples", "200"]) == 0
    row = json.loads(out.read_text())["summary"]["3-conv student from recorded teacher"]
    paired = row["test_gain_paired"]  # recomputed from the pieces' per-image probabilities
    assert paired["images"] == 40 and paired["resamples"] == 200
    assert paired["gain"] == pytest.approx(row["test_gain"], abs=1e-5) and paired["ci_low"] > 0
    assert row["test_gain_criteria"]["interval excludes 0"] is True
    assert "| 3-conv student from recorded teacher | test (40 images) |" in capsys.readouterr().out
    # --set ema_momentum=0.02 and --ema_momentum 0.02 are the same setting
    same = [_piece(tmp_path, "a", {"3-conv student alone": (0, 0.1)}, set=["ema_momentum=0.02"]),
            _piece(tmp_path, "b", {"3-conv student from recorded teacher": (0, 0.5)}, ema_momentum=0.02)]
    assert module.main(["--merge", *same, "--out", str(tmp_path / "same.json")]) == 0
    for setting, value, named in (("epochs", 60, "epochs is 60"), ("temperature", 2.0, "temperature is 2.0"),
                                  ("ema_momentum", 0.02, "--set ema_momentum is 0.02"),
                                  ("set", ['loss_weights={"hard": 1, "soft": 2}'], "--set loss_weights"),
                                  ("image_size", 128, "image_size is 128")):
        other = _piece(tmp_path, f"other_{setting}", {"3-conv student from recorded teacher": (0, 0.5)},
                       **{setting: value})
        with pytest.raises(SystemExit, match=named):
            module.main(["--merge", alone, other, "--out", str(tmp_path / "refused.json")])
    assert not (tmp_path / "refused.json").exists()


def test_record_predictions_covers_in_memory_data_sets(tmp_path):
    """scripts/record_predictions.py on a MedMNIST-style .npz (images in memory, ids 'train-<i>'): a student
    distilled from the file gets the live teacher's soft loss."""
    import importlib.util

    from monai.networks.nets import DenseNet121

    generator = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 16), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = generator.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    torch.manual_seed(0)
    ckpt = tmp_path / "assistant.pt"
    torch.save(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), ckpt)
    data = {"dataset": "pneumoniamnist", "dataset_dir": str(tmp_path), "image_size": 32, "batch_size": 8,
            "device": "cpu", "augment": False, "temperature": 1.0,
            "loss_weights": {"hard": 1.0, "soft": 1.0, "feature": 0.0}}
    spec = importlib.util.spec_from_file_location("record_predictions", REPO_ROOT / "scripts" / "record_predictions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--stage", "assistant", "--ckpt", str(ckpt), "--split", "train", "--out",
                        str(tmp_path / "recorded"), "--set", "dataset=pneumoniamnist", f"dataset_dir={tmp_path}",
                        "image_size=32"]) == 0
    table = pd.read_csv(tmp_path / "recorded" / "predictions.csv")
    assert table["image"].tolist() == [f"train-{i}" for i in range(16)] and list(table.columns[3:5]) == [
        "Normal", "Pneumonia"]
    live = _parse("configs/student.json", tmp_path / "live", assistant_ckpt=str(ckpt), **data)
    recorded = _parse("configs/student.json", tmp_path / "file",
                      teacher_predictions=str(tmp_path / "recorded" / "predictions.csv"), **data)
    batch = _first_batch(live)
    network = live.parser.get_parsed_content("network").eval()
    soft = [w.parser.get_parsed_content("distiller").forward_train(batch, network)[1]["soft"] for w in (live, recorded)]
    torch.testing.assert_close(soft[1], soft[0], rtol=1e-4, atol=1e-6)
