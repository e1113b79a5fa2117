"""configs/inference.json: predictions and saliency for good files, a listed problem and exit status 3 for bad ones."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from bundle.data.phantoms import PhantomSpec, render_phantom
from bundle.inference import BAD_INPUTS_EXIT_STATUS
from bundle.networks import ThreeConvStudent
from conftest import REPO_ROOT, require_shared, run_bundle

CLASSES = ["Nodule", "Consolidation", "Pleural Effusion", "Cardiomegaly", "Pneumothorax"]


def _phantom_png(path, seed: int) -> None:
    image, _ = render_phantom(np.random.default_rng(seed), {"Cardiomegaly"} if seed % 2 else set(),
                              PhantomSpec(image_size=96))
    Image.fromarray((np.clip(np.asarray(image), 0, 1) * 65535).astype(np.uint16)).save(path)


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    for seed in range(3):
        _phantom_png(folder / f"case{seed}.png", seed)
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "case0.png").read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.save(ThreeConvStudent(in_channels=1, out_channels=len(CLASSES)).state_dict(), path)
    return path


def test_inference_writes_predictions_and_saliency_and_lists_bad_files(tmp_path, inputs, checkpoint):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run_bundle("configs/inference.json", "run", out, dataset_dir=str(inputs), ckpt_path=str(checkpoint),
                   image_size=64, device="cpu")
    assert info.value.code == BAD_INPUTS_EXIT_STATUS
    rows = {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader((out / "predictions.csv").open())}
    assert set(rows) == {"case0.png", "case1.png", "case2.png", "empty.png", "truncated.png", "notes.txt"}
    assert rows["empty.png"]["status"] == "error" and "empty file" in rows["empty.png"]["error"]
    assert rows["truncated.png"]["status"] == "error" and rows["truncated.png"]["Nodule"] == ""
    assert rows["notes.txt"]["status"] == "error" and "unknown image format" in rows["notes.txt"]["error"]
    for name in ("case0.png", "case1.png", "case2.png"):
        probabilities = [float(rows[name][c]) for c in CLASSES]
        assert rows[name]["status"] == "ok" and all(0.0 < p < 1.0 for p in probabilities)
        predicted = {c for c, p in zip(CLASSES, probabilities) if p >= 0.5}
        assert set(filter(None, rows[name]["predicted"].split(";"))) == predicted
        maps = sorted((out / "saliency").glob(f"{name}_*.npy"))
        assert maps and all((m.with_suffix(".png")).is_file() for m in maps)
        saliency = np.load(maps[0])
        assert saliency.shape == (64, 64) and saliency.min() >= 0.0 and saliency.max() <= 1.0
        with Image.open(maps[0].with_suffix(".png")) as overlay:  # the 96 px input's own pixels, and a colour bar
            assert overlay.size[1] == 96 and overlay.size[0] > 96
    assert not list((out / "saliency").glob("empty*")) and not list((out / "saliency").glob("truncated*"))
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 6 and set(records[0]["probabilities"]) in (set(CLASSES), set())


def test_inference_on_a_real_dicom_exits_0_from_the_command_line(tmp_path, checkpoint):
    dicom = require_shared("dicom/chest_cr_monochrome1.dcm")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(dicom, folder / "IM0001")  # DICOM without an extension, found by its signature
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
               "--dataset_dir", str(folder), "--ckpt_path", str(checkpoint), "--output_dir", str(tmp_path / "out"),
               "--saliency_method", "gradcampp", "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert list((tmp_path / "out" / "saliency").glob("IM0001_*.png"))
    assert result.stderr.strip().splitlines()[-1:] != ["Traceback (most recent call last):"]


def test_inference_preprocessing_equals_the_training_evaluation_preprocessing(tmp_path, inputs):
    """inference.json is self-contained (it must run outside this repository); it may not drift from student.json."""
    inference = ConfigParser()
    inference.read_config(REPO_ROOT / "configs" / "inference.json")
    inference.update({"image_size": 48})
    training = ConfigParser()
    training.read_config(REPO_ROOT / "configs" / "student.json")
    training.update({"image_size": 48})
    old = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        infer = inference.get_parsed_content("preprocessing")
        evaluate = training.get_parsed_content("preprocessing#eval")
    finally:
        os.chdir(old)
    record = {"image": str(inputs / "case1.png"), "label": [0.0] * 5, "label_mask": [1.0] * 5}
    a = infer({"image": record["image"]})["image"]
    b = evaluate(dict(record))["image"]
    assert a.shape == b.shape == (1, 48, 48)
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_verify_net_in_out_passes_on_inference_config():
    command = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "--net_id", "network_def",
               "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr


def test_metadata_is_valid_against_the_bundle_schema(tmp_path):
    """verify_metadata downloads the schema unless it finds it at --filepath: use the offline copy."""
    from conftest import data_root

    schema = data_root().parent / "monai" / "meta_schema_20240725.json"
    if not schema.is_file():
        schema = require_shared("../monai/meta_schema_20240725.json")
    local = tmp_path / "schema.json"
    shutil.copy(schema, local)
    command = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
               "--filepath", str(local)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "metadata is verified with no error" in result.stdout + result.stderr
    metadata = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())
    import bundle

    assert metadata["version"] == bundle.__version__ and metadata["version"] in metadata["changelog"]


# ----------------------------------------------------------------------------------------------
# a folder scan accounts for every file and never blocks; saliency files never overwrite each other


def _dicom(path, seed: int, **elements):
    from test_io import write_dicom

    image, _ = render_phantom(np.random.default_rng(seed), set(), PhantomSpec(image_size=64))
    return write_dicom(path, (np.asarray(image) * 4095).astype(np.uint16), **elements)


def _mixed_folder(root):
    """Good images of every kind (and same-name, same-prefix ones), mixed with every kind of bad entry."""
    import socket

    root.mkdir()
    (root / "a").mkdir()
    (root / "b").mkdir()
    _phantom_png(root / "a" / "case.png", 1)
    _phantom_png(root / "b" / "case.png", 2)  # the same file name in another folder
    _phantom_png(root / "UPPER_EXT.PNG", 3)
    Image.fromarray((np.asarray(Image.open(root / "a" / "case.png")) // 16).astype(np.uint16)).save(
        root / "twelve_bit.png")  # 12-bit data in a 16-bit PNG, no sBIT: scaled by 4095, with a warning
    _dicom(root / "UPPER_EXT.dcm", 7)  # the same stem as UPPER_EXT.PNG
    _dicom(root / "1.2.840.99.7.1", 4)  # UID-named DICOMs sharing a prefix, no extension
    _dicom(root / "1.2.840.99.7.2", 5)
    bare = _dicom(root / "bare_source.dcm", 6)
    import pydicom

    ds = pydicom.dcmread(bare)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(root / "IM0002", enforce_file_format=False, implicit_vr=True, little_endian=True)  # no preamble
    bare.unlink()
    bad = {}
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "black.png")
    bad["black.png"] = "constant image"
    Image.fromarray(np.asarray(Image.open(root / "UPPER_EXT.PNG"), np.uint16).astype(np.uint8)).save(
        root / "scan.gif")
    bad["scan.gif"] = "GIF file, a format the loader does not read"
    (root / "notes.txt").write_text("not an image")
    bad["notes.txt"] = "unknown image format"
    os.mkfifo(root / "pipe.png")
    bad["pipe.png"] = "named pipe (FIFO), not an image file"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock"))
    server.close()
    bad["sock"] = "is a socket"
    (root / "dangling.png").symlink_to(root / "gone.png")
    bad["dangling.png"] = "dangling symbolic link"
    (root / "loop").symlink_to(root / "loop")
    bad["loop"] = "symbolic link loop"
    (root / "a" / "back").symlink_to(root, target_is_directory=True)  # a folder loop: searched once
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: not an input
    good = {"a/case.png", "b/case.png", "UPPER_EXT.PNG", "UPPER_EXT.dcm", "twelve_bit.png", "1.2.840.99.7.1",
            "1.2.840.99.7.2", "IM0002"}
    return good, bad


@pytest.mark.timeout(300)
def test_folder_scan_predicts_or_lists_every_file_and_never_blocks(tmp_path, checkpoint):
    folder = tmp_path / "inputs"
    good, bad = _mixed_folder(folder)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run_bundle("configs/inference.json", "run", out, dataset_dir=str(folder), ckpt_path=str(checkpoint),
                   image_size=64, device="cpu", threshold=0.0)  # every class explained: 5 maps per image
    assert info.value.code == BAD_INPUTS_EXIT_STATUS
    rows = {os.path.relpath(row["image"], folder): row for row in csv.DictReader((out / "predictions.csv").open())}
    assert set(rows) == good | set(bad)  # every file, once; the hidden one and the folder loop are not inputs
    for name in good:
        assert rows[name]["status"] == "ok", (name, rows[name]["error"])
    for name, problem in bad.items():
        assert rows[name]["status"] == "error" and problem in rows[name]["error"], (name, rows[name]["error"])

    # saliency: one map and one overlay per input and explained class (at most 3), none overwritten
    index = list(csv.DictReader((out / "saliency" / "maps.csv").open()))
    assert len(index) == len(good) * 3
    assert len({row["map"] for row in index}) == len(index) and len({row["overlay"] for row in index}) == len(index)
    assert len(list((out / "saliency").glob("*.npy"))) == len(list((out / "saliency").glob("*.png"))) == len(index)
    token = {c: c.replace(" ", "_") for c in CLASSES}
    maps = {(os.path.relpath(row["image"], folder), row["class"]): row["map"] for row in index}
    expected = {name: name.rsplit("/", 1)[-1] for name in good} | {"b/case.png": "case.png_2"}
    for (image, finding), name in maps.items():
        assert name == f"{expected[image]}_{token[finding]}.npy", (image, finding, name)
    a, b = (next(np.load(out / "saliency" / name) for (i, _), name in maps.items() if i == f"{d}/case.png") for d in "ab")
    assert not np.array_equal(a, b)  # two images, two maps


def test_output_names_keep_the_whole_input_name_and_stay_unique():
    from bundle.handlers.saliency import class_tokens, output_name

    taken: set[str] = set()
    names = [output_name(f, taken) for f in ("/x/UPPER_EXT.PNG", "/x/UPPER_EXT.dcm", "/y/upper_ext.png",
                                             "/x/1.2.3.4", "/x/1.2.3.5", "/z/My scan (1).png", "/x/UPPER_EXT.PNG")]
    assert names == ["UPPER_EXT.PNG", "UPPER_EXT.dcm", "upper_ext.png_2", "1.2.3.4", "1.2.3.5", "My_scan_1_.png",
                     "UPPER_EXT.PNG_3"]
    assert class_tokens(["Pleural Effusion", "Pleural_Effusion", "No Finding"]) == [
        "Pleural_Effusion", "Pleural_Effusion_1", "No_Finding"]


@pytest.mark.timeout(120)
def test_find_images_lists_special_files_without_opening_them(tmp_path):
    from bundle.inference import find_images

    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe")
    (folder / ".hidden.png").write_bytes(b"x")
    _phantom_png(folder / "case.png", 0)
    assert [os.path.basename(r["image"]) for r in find_images(folder)] == ["case.png", "pipe"]
