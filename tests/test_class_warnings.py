"""Inputs that pass every file check but are still mistakes: a class-name typo, a class with almost no images,
and (check_data quick) undecodable images met one at a time during training."""

from __future__ import annotations

import csv
import logging
import os
import shlex
import subprocess
import sys

import pytest

from bundle.data import load_splits
from bundle.data.check import check_splits, class_warnings
from conftest import REPO_ROOT
from test_check_dataset import _check_dataset, _image_bytes


def make_typo_dataset(root, typo_rows: int = 1):
    """A multi-class CSV: 12 'pneumonia', 12 'normal', ``typo_rows`` 'pnuemonia' and 2 'Normal ' (case and space)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [(f"p{i:02d}.png", "pneumonia") for i in range(12)] + [(f"n{i:02d}.png", "normal") for i in range(12)]
    rows += [(f"t{i:02d}.png", "pnuemonia") for i in range(typo_rows)] + [("c0.png", "Normal_"), ("c1.png", "Normal_")]
    for index, (name, _) in enumerate(rows):
        (root / name).write_bytes(_image_bytes(40 + 3 * index, "PNG"))
    with open(root / "labels.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "finding"])
        writer.writerows(rows)
    return root


OPTIONS = {"class_column": "finding"}


def test_near_duplicate_and_rare_classes_are_named_with_their_rows(tmp_path):
    data = make_typo_dataset(tmp_path / "data")
    splits = load_splits("csv", data, options=OPTIONS)
    assert splits.class_names == ["Normal_", "normal", "pneumonia", "pnuemonia"]  # four classes, as the file says
    found = class_warnings(splits)
    typo = next(w for w in found if "'pnuemonia'" in w and "'pneumonia'" in w)
    assert "1 edit" in typo and "t00.png" in typo and "#" in typo  # the rows of the rarer name
    case = next(w for w in found if "'Normal_'" in w and "'normal'" in w)
    assert "case, spaces, underscores" in case and "c0.png" in case and "c1.png" in case
    assert any(w.startswith("class 'pnuemonia' has 1 positive image") for w in found)
    assert not any("'pneumonia' has" in w or "'normal' has" in w for w in found)


def test_check_dataset_and_training_start_warn(tmp_path, capsys, caplog):
    data = make_typo_dataset(tmp_path / "data")
    code = _check_dataset()(["--dataset", "csv", "--dataset_dir", str(data), "--options", repr(OPTIONS),
                             "--mode", "quick"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "warning: class names 'pnuemonia' (1 image) and 'pneumonia' (12 images)" in printed
    assert printed.rstrip().splitlines()[-1].startswith("no problems: training can start, but read the 4 warning(s)")

    caplog.set_level(logging.WARNING, logger="bundle.data.check")
    check_splits(load_splits("csv", data, options=OPTIONS), mode="quick")  # what training runs in `initialize`
    assert "'pnuemonia'" in caplog.text and "t00.png" in caplog.text


def test_real_class_names_raise_no_warning():
    from bundle.data.vocabulary import FINDINGS as names  # every canonical finding the readers know

    class Splits:  # every class with plenty of images: only the names are judged
        class_names, task = list(names), "multilabel"
        num_classes = len(names)
        train = [{"image": "x.png", "label": [1.0] * len(names)}] * 5
        validation, test = [], []

    assert class_warnings(Splits()) == []


@pytest.mark.timeout(600)
def test_an_undecodable_image_in_training_says_how_to_list_them_all(tmp_path):
    """check_data quick (the default) does not decode; the first truncated image stops training, and the last
    lines give the exact command that lists every one of them at once, which does."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [(f"img{i:02d}.png", "Abnormal" if i % 2 else "Normal") for i in range(16)]
    for index, (name, _) in enumerate(rows):
        (data / name).write_bytes(_image_bytes(40 + 100 * (index % 2), "PNG"))
    for name in ("bad_a.png", "bad_b.png", "bad_c.png"):
        (data / name).write_bytes(_image_bytes(90, "PNG")[:200])  # a PNG signature, then nothing: quick passes it
        rows.append((name, "Normal"))
    with open(data / "labels.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([("image", "finding"), *rows])
    options = "{'class_column': 'finding', 'class_names': ['Normal', 'Abnormal']}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXR_DISTILL_TRACEBACK_FILE": str(tmp_path / "traceback.txt")}
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                             "configs/student.json", "--dataset", "csv", "--dataset_dir", str(data), "--dataset_options",
                             options, "--output_dir", str(tmp_path / "out"), "--image_size", "32", "--max_epochs", "1",
                             "--device", "cpu", "--split_seed", "1"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    lines = result.stdout.rstrip().splitlines()
    assert result.returncode == 1 and lines[-2].startswith("error: ") and "bad_" in lines[-2], lines[-20:]
    advice = lines[-1]
    assert "--check_data full" in advice and "--mode full" in advice
    command = advice.split("at once: ", 1)[1].split(" (or rerun", 1)[0]
    words = shlex.split(command)
    assert words[1:4] == ["scripts/check_dataset.py", "--dataset", "csv"] and str(data) in words
    listed = subprocess.run([sys.executable, *words[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 1, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert all(name in listed.stdout for name in ("bad_a.png", "bad_b.png", "bad_c.png"))  # all of them, at once
