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
    splits = workflow.parser.get_parsed_content("data#splits")
    skipped = " ".join(error for engine in ("train#trainer", "validate#evaluator")
                       for error in getattr(workflow.parser.get_parsed_content(engine).state, "skipped_inputs", []))
    # the quick check's finds, then every record dropped while training loaded it, each once, with its reason
    listed = {row["file"].rsplit("/", 1)[-1]: row for row in rows}
    assert len(listed) == len(rows) and {"empty.png", "missing.png"} <= set(listed)
    for name in ("truncated.png", "truncated.jpg"):
        in_test = any(str(r["image"]).endswith(name) for r in splits.test)
        assert in_test or name in skipped, (name, skipped)
        assert in_test or ("cannot decode image" in listed[name]["problem"] and listed[name]["split"] in ("train", "validation")
                           and listed[name]["index"] != "")


# ----------------------------------------------------------------------------------------------
# every problem of every record at once, each described as what it is


def make_troubled_dataset(root):
    """A CSV data set of good noise images (6 patients' worth) with one record of every kind of bad file."""
    import os
    import socket

    make_csv_dataset(root, good=12, bad=False)
    (root / "folder.png").mkdir()
    (root / "dangling.png").symlink_to(root / "gone.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    os.mkfifo(root / "pipe.png")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "socket.png"))
    server.close()
    (root / "scan").write_bytes(_image_bytes(10, "GIF"))
    (root / "text.png").write_text("not an image\n" * 10)
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(_image_bytes(90, "PNG")[:200])
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "black.png")
    quick = {  # found without decoding
        "missing.png": "file does not exist",
        "folder.png": "is a directory, not an image file",
        "dangling.png": "dangling symbolic link",
        "loop.png": "symbolic link loop",
        "pipe.png": "is a named pipe (FIFO)",
        "socket.png": "is a socket",
        "scan": "GIF file, a format the loader does not read",
        "empty.png": "empty file (0 bytes)",
    }
    decoded = {"text.png": "cannot decode image", "truncated.png": "truncated", "black.png": "constant image"}
    with open(root / "labels.csv", "a", newline="") as stream:
        csv.writer(stream).writerows([(name, "Normal") for name in (*quick, *decoded)])
    return quick, decoded


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["quick", "full"])
def test_check_dataset_reports_every_problem_of_every_record_at_once(tmp_path, capsys, mode):
    quick, decoded = make_troubled_dataset(tmp_path)
    report = tmp_path / "problems.csv"
    options = "{'class_column': 'finding', 'class_names': ['Normal', 'Abnormal']}"  # files checked as by default
    code = _check_dataset()(["--dataset", "csv", "--dataset_dir", str(tmp_path), "--options", options,
                             "--mode", mode, "--report", str(report)])
    printed = capsys.readouterr().out
    expected = quick | (decoded if mode == "full" else {})
    assert code == 1
    rows = {row["file"].rsplit("/", 1)[-1]: row["problem"] for row in csv.DictReader(report.open())}
    assert set(rows) == set(expected), printed  # missing AND undecodable AND the rest, in one report
    for name, problem in expected.items():
        assert problem in rows[name], (name, rows[name])
    assert f"{len(expected)} with problems" in printed


def test_empty_splits_stop_before_training_naming_the_file_and_split(tmp_path, capsys):
    header_only = tmp_path / "header"
    header_only.mkdir()
    (header_only / "labels.csv").write_text("image,finding\n")
    assert _check_dataset()(["--dataset", "csv", "--dataset_dir", str(header_only), "--options", OPTIONS]) == 2
    err = capsys.readouterr().err
    assert str(header_only / "labels.csv") in err and "no data rows" in err
    two = tmp_path / "two"
    make_csv_dataset(two, good=2, bad=False)  # two patients cannot fill train, validation and test
    assert _check_dataset()(["--dataset", "csv", "--dataset_dir", str(two), "--options", OPTIONS]) == 2
    err = capsys.readouterr().err
    assert str(two) in err and "the test split of 'csv' is empty" in err
    rng = np.random.default_rng(0)
    npz = tmp_path / "pneumoniamnist.npz"
    arrays = {f"{k}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) for k, n in
              (("train", 0), ("val", 3), ("test", 3))}
    arrays.update({f"{k}_labels": np.zeros((len(arrays[f"{k}_images"]), 1), np.uint8) for k in ("train", "val", "test")})
    np.savez(npz, **arrays)
    assert _check_dataset()(["--dataset", "pneumoniamnist", "--dataset_dir", str(npz)]) == 2
    err = capsys.readouterr().err
    assert str(npz) in err and "the train split has no images" in err


def test_folder_layout_lists_a_refused_file_of_a_class_folder(tmp_path, capsys):
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / label).mkdir()
        for i in range(4):
            (tmp_path / label / f"{label}_{i}.png").write_bytes(_image_bytes(40 + 60 * i, "PNG"))
    (tmp_path / "PNEUMONIA" / "notes.txt").write_text("reading list")
    (tmp_path / "PNEUMONIA" / ".DS_Store").write_bytes(b"x")  # hidden: not a record
    assert _check_dataset()(["--dataset", "folder", "--dataset_dir", str(tmp_path), "--mode", "quick"]) == 1
    printed = capsys.readouterr().out
    (line,) = [line for line in printed.splitlines() if "notes.txt" in line]
    assert "unknown image format" in line and "1 with problems" in printed


@pytest.mark.timeout(600)
def test_skip_bad_records_trains_on_the_good_part_and_lists_every_dropped_record(tmp_path):
    """Missing files do not stop it; what only fails when loaded (undecodable, constant) is listed too."""
    quick, decoded = make_troubled_dataset(tmp_path / "data")
    options = {"class_column": "finding", "class_names": ["Normal", "Abnormal"]}
    run_bundle("configs/student.json", "training", tmp_path / "out", dataset_dir=str(tmp_path / "data"),
               skip_bad_records=True, **{**TINY, "check_data": "quick", "dataset_options": options, "max_epochs": 2,
                                         "batch_size": 1})  # (no record left out by drop_last)
    assert (tmp_path / "out" / "model.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "out" / "data_problems.csv").open()))
    listed = {row["file"].rsplit("/", 1)[-1]: row for row in rows}
    assert len(listed) == len(rows)  # each record once, though two epochs met the same bad files
    assert set(quick) <= set(listed)
    splits = run_bundle_splits(tmp_path / "data", options)
    in_test = {str(r["image"]).rsplit("/", 1)[-1] for r in splits.test}
    for name, problem in decoded.items():
        if name not in in_test:  # the test split is not loaded by training
            assert problem in listed[name]["problem"] and listed[name]["split"] in ("train", "validation"), name


def run_bundle_splits(dataset_dir, options):
    from bundle.data import load_splits

    return load_splits("csv", dataset_dir, options=options)


# ----------------------------------------------------------------------------------------------
# the last line the user reads, from the real command


def _run_command(arguments, cwd=REPO_ROOT, env_extra=None):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", *arguments], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    return result.returncode, result.stdout.rstrip().splitlines()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", ["training", "evaluating", "inference"])
def test_the_data_error_is_the_last_line_of_monai_bundle_run(tmp_path, command):
    data = tmp_path / "data"
    make_csv_dataset(data, good=12, bad=True)  # missing, empty and truncated files among good ones
    traceback_file = tmp_path / "traceback.txt"
    env = {"CXR_DISTILL_TRACEBACK_FILE": str(traceback_file)}
    common = ["--dataset", "csv", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out"),
              "--dataset_options", "{'class_column': 'finding', 'class_names': ['Normal', 'Abnormal']}",
              "--image_size", "32", "--device", "cpu", "--max_epochs", "1"]
    if command == "training":
        code, lines = _run_command(["training", "--config_file", "configs/student.json", *common], env_extra=env)
        assert lines[-1].startswith("Fix or remove these records, set skip_bad_records to true"), lines[-30:]
        header = next(line for line in lines if line.startswith("error: "))
        assert str(data / "labels.csv") in header and "2 problem(s)" in header  # check_data quick: no decoding
        assert "missing.png: file does not exist" in "\n".join(lines[-8:]) and "empty.png: empty file" in "\n".join(
            lines[-8:])
    elif command == "evaluating":
        import torch

        from bundle.networks import ThreeConvStudent

        checkpoint = tmp_path / "model.pt"
        torch.save(ThreeConvStudent(in_channels=1, out_channels=2).state_dict(), checkpoint)
        code, lines = _run_command(["evaluating", "--config_file", "['configs/student.json','configs/evaluate.json']",
                                    *common, "--eval_split", "train", "--ckpt_path", str(checkpoint)], env_extra=env)
        # evaluation runs no pre-check: the loader meets a bad file and names it, with what to do
        assert lines[-1].startswith("Fix or remove this file;"), lines[-30:]
        assert lines[-2].startswith("error: ") and str(data) in lines[-2]
        assert any(problem in lines[-2] for problem in BAD.values())
    else:
        empty = tmp_path / "no_images"
        empty.mkdir()
        (empty / ".hidden").write_text("x")
        code, lines = _run_command(["--config_file", "configs/inference.json", "--dataset_dir", str(empty),
                                    "--output_dir", str(tmp_path / "out"), "--device", "cpu"], env_extra=env)
        assert lines[-1] == f"error: {empty}: no files found in the folder (only hidden ones)", lines[-30:]
    assert code == 1
    assert not any(line.startswith("RuntimeError: Failed to") for line in lines)
    assert any(f"full traceback in {traceback_file}" in line for line in lines[-10:])
    assert "Failed to " in traceback_file.read_text() and "CXRDataError" in traceback_file.read_text()


def test_a_missing_checkpoint_is_the_last_line_too(tmp_path):
    """Not a data error, but a file the user named: the same treatment (OSError with a file name)."""
    make_csv_dataset(tmp_path / "data", good=12, bad=False)
    code, lines = _run_command(["evaluating", "--config_file", "['configs/student.json','configs/evaluate.json']",
                                "--dataset", "csv", "--dataset_dir", str(tmp_path / "data"), "--output_dir",
                                str(tmp_path / "out"), "--dataset_options", "{'class_column': 'finding'}",
                                "--device", "cpu"], env_extra={"CXR_DISTILL_TRACEBACK_FILE": str(tmp_path / "tb.txt")})
    assert code == 1
    assert lines[-1] == f"error: {tmp_path / 'out' / 'model.pt'}: No such file or directory", lines[-20:]


def test_an_evaluation_batch_of_only_unreadable_files_stops_with_a_data_error_naming_one():
    import torch

    from bundle.engines import CXREvaluator

    batch = {"image": torch.zeros(2, 1, 8, 8), "label": torch.zeros(2, 3),
             "error": ["/data/a.png: cannot decode image", "/data/b.png: the file is empty"]}
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    evaluator = CXREvaluator(device="cpu", val_data_loader=[batch], network=network, decollate=False)
    with pytest.raises(CXRDataError) as info:
        evaluator.run()
    assert "every image of an evaluation batch was unreadable (2 files; the first: /data/a.png: cannot decode image)" \
        in str(info.value)
    assert "scripts/check_dataset.py" in (info.value.advice or "")
