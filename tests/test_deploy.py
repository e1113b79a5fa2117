"""MONAI Deploy application (bundle/deploy): the real CR DICOM in; JSON, DICOM SR and Grad-CAM overlay out.

The app runs in this process through its command (``bundle.deploy.__main__.main``) and once
as ``python -m bundle.deploy`` with the SDK's ``HOLOSCAN_*`` variables. Its probabilities
and saliency maps must equal those of ``configs/inference.json`` for the same file and
checkpoint. The SDK (Holoscan) is the optional ``deploy`` extra: without it these tests
skip, except under CI=true, where ``scripts/setup_env.sh`` installs it and they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from bundle.networks import ThreeConvStudent
from conftest import REPO_ROOT, require_shared, run_bundle

CLASSES = ["Nodule", "Consolidation", "Pleural Effusion", "Cardiomegaly", "Pneumothorax"]
IMAGE_SIZE = 64
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _require_sdk() -> None:
    from bundle.deploy import sdk_available

    if not sdk_available():
        message = "MONAI Deploy App SDK not installed (pip install -e '.[deploy]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def dicom() -> Path:
    return require_shared("dicom/chest_cr_monochrome1.dcm")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A bundle folder as a user would pass it: configs/ (image size 64) and a random-init models/model.pt."""
    root = tmp_path_factory.mktemp("bundle")
    (root / "configs").mkdir()
    (root / "models").mkdir()
    config = json.loads((REPO_ROOT / "configs" / "inference.json").read_text())
    config["image_size"] = IMAGE_SIZE
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    shutil.copy(REPO_ROOT / "configs" / "metadata.json", root / "configs" / "metadata.json")
    torch.manual_seed(0)
    torch.save(ThreeConvStudent(in_channels=1, out_channels=len(CLASSES)).state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def app_output(tmp_path_factory, dicom, bundle_dir) -> Path:
    _require_sdk()
    from bundle.deploy.__main__ import main

    out = tmp_path_factory.mktemp("deploy_out")
    assert main(["bundle.deploy", "-i", str(dicom), "-o", str(out), "-m", str(bundle_dir)]) == 0
    return out


def test_app_writes_classification_json(app_output, dicom):
    import pydicom

    record = json.loads((app_output / "classification.json").read_text())
    source = pydicom.dcmread(dicom, stop_before_pixels=True)
    assert record["class_names"] == CLASSES and record["task"] == "multilabel" and record["threshold"] == 0.5
    probabilities = record["probabilities"]
    assert sorted(probabilities) == sorted(CLASSES)
    assert all(0.0 < p < 1.0 for p in probabilities.values())
    # multi-label: independent sigmoids, so they do not sum to 1 (a softmax would)
    assert abs(sum(probabilities.values()) - 1.0) > 0.1
    assert record["positive_findings"] == [c for c in CLASSES if probabilities[c] >= 0.5]
    assert record["source"]["sop_instance_uid"] == source.SOPInstanceUID
    assert record["source"]["study_instance_uid"] == source.StudyInstanceUID
    assert (record["source"]["rows"], record["source"]["columns"]) == (1955, 1841)
    metadata = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())
    assert record["model"]["version"] == metadata["version"] and record["model"]["network"] == "ThreeConvStudent"
    assert record["model"]["image_size"] == IMAGE_SIZE
    assert "NOT FOR DIAGNOSTIC USE" in record["disclaimer"]
    assert Path(record["structured_report"]) == app_output / "classification_sr.dcm"


def test_app_writes_a_structured_report_referencing_the_source(app_output, dicom):
    import highdicom as hd
    import pydicom

    source = pydicom.dcmread(dicom, stop_before_pixels=True)
    sr = pydicom.dcmread(app_output / "classification_sr.dcm")
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert referenced.ReferencedSOPClassUID == source.SOPClassUID
    assert sr.ContentQualification == "RESEARCH" and "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription
    assert any("NOT FOR DIAGNOSTIC USE" in item.get("TextValue", "") for item in sr.ContentSequence)

    record = json.loads((app_output / "classification.json").read_text())
    groups = hd.sr.srread(app_output / "classification_sr.dcm").content.get_image_measurement_groups()
    assert [g.finding_type.meaning for g in groups] == CLASSES
    for group, name in zip(groups, CLASSES):
        (measurement,) = group.get_measurements()
        assert measurement.name.meaning == "Probability"
        assert measurement.value == pytest.approx(record["probabilities"][name], abs=1e-6)
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == ("Present" if name in record["positive_findings"] else "Absent")
        assert group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID


def test_app_writes_saliency_overlays(app_output, dicom):
    record = json.loads((app_output / "classification.json").read_text())
    explained = record["positive_findings"] or [max(record["probabilities"], key=record["probabilities"].get)]
    assert sorted(record["saliency"]) == sorted(explained)
    for name in explained:
        png = app_output / "saliency" / f"chest_cr_monochrome1.dcm_{name.replace(' ', '_')}.png"
        assert str(png) in record["saliency"][name]
        with Image.open(png) as overlay:  # on the radiograph's own pixels, with a colour bar beside it
            header = pydicom.dcmread(dicom, stop_before_pixels=True)
            rows, columns = int(header.Rows), int(header.Columns)
            assert overlay.size[1] == rows and overlay.size[0] > columns and overlay.mode in ("RGB", "RGBA")
        saliency = np.load(png.with_suffix(".npy"))
        assert saliency.shape == (IMAGE_SIZE, IMAGE_SIZE) and 0.0 <= saliency.min() <= saliency.max() <= 1.0


def test_app_and_inference_config_agree(app_output, tmp_path, dicom, bundle_dir):
    """No drift: the app and configs/inference.json give the same probabilities and maps for one file."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(dicom, folder / dicom.name)
    out = tmp_path / "bundle_out"
    run_bundle("configs/inference.json", "run", out, dataset_dir=str(folder),
               ckpt_path=str(bundle_dir / "models" / "model.pt"), image_size=IMAGE_SIZE, device="cpu")
    (row,) = json.loads((out / "predictions.json").read_text())
    app = json.loads((app_output / "classification.json").read_text())
    assert row["status"] == "ok"
    for name in CLASSES:
        assert app["probabilities"][name] == pytest.approx(row["probabilities"][name], abs=1e-6)
    assert app["positive_findings"] == row["predicted"]
    for name in app["saliency"]:
        stem = f"chest_cr_monochrome1.dcm_{name.replace(' ', '_')}"
        np.testing.assert_allclose(np.load(app_output / "saliency" / f"{stem}.npy"),
                                   np.load(out / "saliency" / f"{stem}.npy"), atol=1e-5)


@pytest.mark.parametrize("case", ["text file", "not a chest", "no pixel data", "empty folder"])
def test_bad_input_exits_2_naming_the_file(tmp_path, bundle_dir, capsys, case):
    _require_sdk()
    from bundle.deploy.__main__ import main

    if case == "text file":
        bad = tmp_path / "notes.dcm"
        bad.write_text("not a DICOM file\n" * 20)
        expected = "not a DICOM file"
    elif case == "not a chest":
        bad = require_shared("dicom/tibia_cr_not_chest_j2k.dcm")
        expected = "not a chest"
    elif case == "no pixel data":
        import pydicom

        source = pydicom.dcmread(require_shared("dicom/chest_cr_monochrome1.dcm"), stop_before_pixels=True)
        bad = tmp_path / "header_only.dcm"
        source.save_as(bad, enforce_file_format=True)
        expected = "no pixel data"
    else:
        bad = tmp_path / "empty"
        bad.mkdir()
        (bad / "readme.txt").write_text("no images here")
        expected = "no DICOM image found"
    out = tmp_path / "out"
    assert main(["bundle.deploy", "-i", str(bad), "-o", str(out), "-m", str(bundle_dir)]) == 2
    message = capsys.readouterr().err
    assert f"error: {bad}:" in message and expected in message
    assert not out.exists()  # nothing written, not even the output folder


@pytest.mark.timeout(600)
def test_folder_input_lists_every_other_file_and_names_one_map_per_finding(tmp_path, dicom, bundle_dir):
    """A UID-named DICOM among files of every kind (a named pipe too: never opened); every finding explained."""
    _require_sdk()
    import pydicom

    from bundle.deploy.__main__ import main

    permissive = tmp_path / "bundle"
    shutil.copytree(bundle_dir, permissive)
    config = json.loads((permissive / "configs" / "inference.json").read_text())
    config["threshold"] = 0.0  # every finding positive: several explained classes for one image
    (permissive / "configs" / "inference.json").write_text(json.dumps(config))
    folder = tmp_path / "study"
    folder.mkdir()
    image = folder / "1.2.826.0.1.3680043.8.498.1"  # UID file names share long prefixes
    shutil.copy(dicom, image)
    (folder / "notes.txt").write_text("not an image")
    os.mkfifo(folder / "pipe")
    header = pydicom.dcmread(dicom, stop_before_pixels=True)
    header.save_as(folder / "1.2.826.0.1.3680043.8.498.2", enforce_file_format=True)  # no pixel data
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).save(folder / "picture.png")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    out = tmp_path / "out"
    assert main(["bundle.deploy", "-i", str(folder), "-o", str(out), "-m", str(permissive)]) == 0
    record = json.loads((out / "classification.json").read_text())
    assert record["source"]["file"] == str(image)
    skipped = {Path(item["file"]).name: item["reason"] for item in record["skipped_inputs"]}
    assert set(skipped) == {"notes.txt", "pipe", "1.2.826.0.1.3680043.8.498.2", "picture.png"}
    assert "named pipe (FIFO)" in skipped["pipe"] and "without pixel data" in skipped["1.2.826.0.1.3680043.8.498.2"]
    assert "not DICOM" in skipped["picture.png"] and "unknown image format" in skipped["notes.txt"]
    assert len(record["positive_findings"]) == len(CLASSES) and len(record["saliency"]) == 3  # max_classes
    files = [f for finding in record["saliency"].values() for f in finding]
    assert len(set(files)) == len(files) == 6 and all(Path(f).is_file() for f in files)
    for finding, (npy, png) in record["saliency"].items():
        assert Path(npy).name == f"{image.name}_{finding.replace(' ', '_')}.npy" and png == npy[:-4] + ".png"


def assert_no_holoscan_noise(printed: str) -> None:
    """Holoscan's CUDA probe, stack-size warnings and its scheduler's closing "deadlock" line are not printed on
    a CPU run, nor highdicom's line per copied DICOM module."""
    for noise in ("cudaGetDeviceCount", "CudaObjectHandler", "deadlock", "Current stack size", "[info]",
                  "highdicom.base"):
        assert noise not in printed, noise


def test_not_a_chest_ends_with_one_clear_line_and_exit_status_2(tmp_path, bundle_dir):
    """``python -m bundle.deploy`` as a user runs it: no Holoscan errors or traceback, the reason last."""
    _require_sdk()
    tibia = require_shared("dicom/tibia_cr_not_chest_j2k.dcm")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "HOLOSCAN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "bundle.deploy", "-i", str(tibia), "-o", str(out),
                             "-m", str(bundle_dir)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tibia}: BodyPartExamined is 'EXTREMITY', not a chest; pass --allow-non-chest to classify it anyway")
    assert "Traceback" not in printed and "[error]" not in printed and "GXF_FAILURE" not in printed
    assert "require_chest" not in printed  # the advice names this command's option, not the loader's argument
    assert not out.exists()
    assert_no_holoscan_noise(printed)


def test_allow_non_chest_classifies_it_anyway(tmp_path, bundle_dir, capsys):
    _require_sdk()
    from bundle.deploy.__main__ import main

    tibia = require_shared("dicom/tibia_cr_not_chest_j2k.dcm")
    out = tmp_path / "out"
    assert main(["bundle.deploy", "-i", str(tibia), "-o", str(out), "-m", str(bundle_dir), "--allow-non-chest"]) == 0
    record = json.loads((out / "classification.json").read_text())
    assert record["source"]["body_part_examined"] == "EXTREMITY" and sorted(record["probabilities"]) == sorted(CLASSES)
    assert (out / "classification_sr.dcm").is_file()


def test_bad_model_path_is_reported_before_holoscan_starts(tmp_path, dicom, capsys):
    _require_sdk()
    from bundle.deploy.__main__ import main

    empty = tmp_path / "models"
    empty.mkdir()
    assert main(["bundle.deploy", "-i", str(dicom), "-o", str(tmp_path / "out"), "-m", str(empty)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {empty}: no models/model.pt")


@pytest.mark.slow
def test_folder_input_and_holoscan_variables_from_the_command_line(tmp_path, dicom, bundle_dir):
    """``python -m bundle.deploy`` with no options: paths from HOLOSCAN_INPUT/OUTPUT/MODEL_PATH, as in a MAP."""
    _require_sdk()
    folder = tmp_path / "input" / "study"
    folder.mkdir(parents=True)
    shutil.copy(dicom, folder / "IM0001")  # a DICOM without extension, found by content
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "output"
    env = {**{k: v for k, v in os.environ.items() if k != "HOLOSCAN_LOG_LEVEL"},
           "HOLOSCAN_INPUT_PATH": str(tmp_path / "input"), "HOLOSCAN_OUTPUT_PATH": str(out),
           "HOLOSCAN_MODEL_PATH": str(bundle_dir / "models" / "model.pt")}
    result = subprocess.run([sys.executable, "-m", "bundle.deploy"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "classification.json").read_text())
    assert record["source"]["file"] == str(folder / "IM0001")
    assert record["model"]["checkpoint"] == str(bundle_dir / "models" / "model.pt")
    assert (out / "classification_sr.dcm").is_file() and list((out / "saliency").glob("IM0001_*.png"))
    assert_no_holoscan_noise(result.stdout + result.stderr)


def test_stage_map_makes_a_packageable_application_folder(tmp_path, bundle_dir):
    """scripts/stage_map.py: the folder `monai-deploy package` takes, and the MAP's models layout resolves."""
    import tomllib

    from bundle.deploy.model import _resolve_model

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import stage_map
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    out = stage_map.stage(bundle_dir, tmp_path / "map")
    app = out / "app"
    assert (app / "__main__.py").is_file() and (app / "bundle" / "deploy" / "app.py").is_file()
    assert not list(app.rglob("__pycache__"))
    assert json.loads((app / "configs" / "inference.json").read_text())["image_size"] == IMAGE_SIZE
    metadata = json.loads((app / "configs" / "metadata.json").read_text())
    assert f"version: {metadata['version']}" in (app / "app.yaml").read_text()
    requirements = (app / "requirements.txt").read_text().splitlines()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert requirements[: len(project["dependencies"])] == project["dependencies"]
    assert any(r.startswith("monai-deploy-app-sdk") for r in requirements)
    assert any(r.startswith("highdicom") for r in requirements)
    assert not any(r.startswith("holoscan-cli") for r in requirements)  # the packager, not the app
    checkpoint = out / "models" / "cxr-distill" / "model.pt"
    assert checkpoint.read_bytes() == (bundle_dir / "models" / "model.pt").read_bytes()
    _, found = _resolve_model(out / "models")  # HOLOSCAN_MODEL_PATH=/opt/holoscan/models in a MAP
    assert found == checkpoint.resolve()
