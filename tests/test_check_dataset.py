"""check_dataset.py and the pre-training guards: every bad input is named before training starts."""

from __future__ import annotations

import csv
import importlib.util
import io

import numpy as np
import pytest
from PIL import Image

from bundle.data import CXRDataError
from bundle.stages import stage_configs
from conftest import REPO_ROOT, error_chain, require_shared, run_bundle

BAD = {
    "empty.png": "empty file (0 bytes)",
    "truncated.png": "truncated",
    "truncated.jpg": "truncated",
    "missing.png": "file does not exist",
}


def _check_dataset():
    spec = importlib.util.spec_from_file_location("check_dataset", REPO_ROOT / "scripts" / "check_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _image_bytes(value: int, fmt: str) -> bytes:
    rng = np.random.default_rng(value)
    array = (rng.random((48, 48)) * 60 + value).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def make_csv_dataset(root, good: int = 30, bad: bool = True):
    """A multi-class CSV data set of noise images, with the files of BAD among them."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(good):
        name = f"img{i:03d}.png"
        (root / name).write_bytes(_image_bytes(40 + 100 * (i % 2), "PNG"))
        rows.append((name, "Abnormal" if i % 2 else "Normal"))
    if bad:
        (root / "empty.png").write_bytes(b"")
        (root / "truncated.png").write_bytes(_image_bytes(90, "PNG")[:200])
        (root / "truncated.jpg").write_bytes(_image_bytes(90, "JPEG")[:300])
        rows += [(name, "Normal") for name in BAD]
    with open(root / "labels.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "finding"])
        writer.writerows(rows)
    return root / "labels.csv"


OPTIONS = "{'class_column': 'finding', 'class_names': ['Normal', 'Abnormal'], 'check_files': False}"


def test_check_dataset_lists_every_bad_file_and_exits_1(tmp_path, capsys):
    make_csv_dataset(tmp_path)
    report = tmp_path / "problems.csv"
    code = _check_dataset()(["--dataset", "csv", "--dataset_dir", str(tmp_path), "--options", OPTIONS,
                             "--report", str(report)])
    printed = capsys.readouterr().out
    assert code == 1
    for name, problem in BAD.items():
        line = next((line for line in printed.splitlines() if name in line), None)
        assert line is not None and problem in line, (name, printed)
    assert "4 with problems" in printed
    rows = list(csv.DictReader(report.open()))
    assert sorted(row["file"].rsplit("/", 1)[-1] for row in rows) == sorted(BAD)


def test_check_dataset_clean_and_unreadable(tmp_path, capsys):
    make_csv_dataset(tmp_path, bad=False)
    assert _check_dataset()(["--dataset", "csv", "--dataset_dir", str(tmp_path), "--options", OPTIONS]) == 0
    assert "no problems" in capsys.readouterr().out
    # a CSV without the class column cannot be read at all: exit 2, the file and the column named
    code = _check_dataset()(["--dataset", "csv", "--dataset_dir", str(tmp_path),
                             "--options", "{'class_column': 'diagnosis'}"])
    err = capsys.readouterr().err
    assert code == 2 and "labels.csv" in err and "diagnosis" in err
    assert _check_dataset()(["--dataset", "no_such_set"]) == 2
    assert "unknown dataset 'no_such_set'" in capsys.readouterr().err


def test_check_dataset_on_real_cxr3(capsys):
    root = require_shared("cxr3")
    assert _check_dataset()(["--dataset", "cxr3", "--dataset_dir", str(root), "--mode", "quick"]) == 0
    assert "checked 476 records" in capsys.readouterr().out


TINY = {"image_size": 32, "batch_size": 8, "max_epochs": 1, "device": "cpu", "check_data": "full",
        "dataset": "csv", "dataset_options": {"class_column": "finding", "class_names": ["Normal", "Abnormal"],
                                              "check_files": False}}


def test_training_stops_before_starting_and_names_the_bad_files(tmp_path):
    make_csv_dataset(tmp_path / "data")
    with pytest.raises(Exception) as info:
        run_bundle("configs/student.json", "training", tmp_path / "out", dataset_dir=str(tmp_path / "data"), **TINY)
    chain = error_chain(info.value)
    message = str(next(e for e in chain if isinstance(e, CXRDataError)))
    assert "4 problem(s)" in message and all(name in message for name in BAD)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_training_can_skip_bad_files_and_logs_them(tmp_path):
    make_csv_dataset(tmp_path / "data")
    workflow = run_bundle("configs/student.json", "training", tmp_path / "out", dataset_dir=str(tmp_path / "data"),
                          skip_bad_records=True, **TINY)
    splits = workflow.parser.get_parsed_content("data#splits")
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 30
    assert (tmp_path / "out" / "model.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "out" / "data_problems.csv").open()))
    assert sorted(row["file"].rsplit("/", 1)[-1] for row in rows) == sorted(BAD)


def test_image_size_the_network_cannot_take_is_reported_before_training(tmp_path):
    with pytest.raises(Exception) as info:
        run_bundle(stage_configs("teacher"), "training", tmp_path, dataset_options={"num_images": 12},
                   image_size=28, max_epochs=1, device="cpu", teacher_members=["efficientnet-b0"])
    chain = error_chain(info.value)
    message = " ".join(str(e) for e in chain)
    assert "teacher network" in message and "image_size 28 px" in message and "is 32 px" in message


def test_teacher_checkpoint_for_another_class_count_is_reported_before_training(tmp_path):
    import torch

    from bundle.networks import EfficientNetEnsemble

    wrong = tmp_path / "teacher_3_classes.pt"
    torch.save(EfficientNetEnsemble(["efficientnet-b0"], out_channels=3).state_dict(), wrong)  # the data has 5
    with pytest.raises(Exception) as info:
        run_bundle("configs/student.json", "training", tmp_path / "out", dataset_options={"num_images": 12},
                   image_size=32, max_epochs=1, device="cpu", teacher_ckpt=str(wrong),
                   teacher_members=["efficientnet-b0"])
    chain = error_chain(info.value)
    message = " ".join(str(e) for e in chain)
    assert str(wrong) in message and "does not match" in message
    assert "members.0._fc.weight: checkpoint (3, 1280), network (5, 1280)" in message
    assert not (tmp_path / "out" / "model.pt").exists()


def test_files_the_quick_check_cannot_see_are_skipped_during_training(tmp_path):
    """check_data quick does not decode: truncated images reach the loader, which records them instead of failing."""
    make_csv_dataset(tmp_path / "data")
    workflow = run_bundle("configs/student.json", "training", tmp_path / "out", dataset_dir=str(tmp_path / "data"),
                          skip_bad_records=True, **{**TINY, "check_data": "quick", "max_epochs": 2})
    assert (tmp_path / "out" / "model.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "out" / "data_problems.csv").open()))
    assert sorted(row["file"].rsplit("/", 1)[-1] for row in rows) == ["empty.png", "missing.png"]
    splits = workflow.parser.get_parsed_content("data#splits")
    skipped = " ".join(error for engine in ("train#trainer", "validate#evaluator")
                       for error in getattr(workflow.parser.get_parsed_content(engine).state, "skipped_inputs", []))
    for name in ("truncated.png", "truncated.jpg"):
        in_test = any(str(r["image"]).endswith(name) for r in splits.test)
        assert in_test or name in skipped, (name, skipped)
