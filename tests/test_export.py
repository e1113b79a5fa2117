"""Exports (TorchScript, ONNX) agree with PyTorch; the Model Zoo bundle runs from its zip, alone, offline."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bundle.checkpoints import CheckpointError, read_state_dict
from bundle.export import ExportError, compare_exports, export_bundle
from conftest import REPO_ROOT, require_shared
from export_support import (CLASSES, DICOM, NAME, PNG, bundle_network, export_random_student, preprocess,
                            random_student_checkpoint, reference_probabilities)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_random_student(tmp_path_factory.mktemp("export"), onnx=True)


@pytest.fixture(scope="module")
def real_images():
    return [require_shared(PNG), require_shared(DICOM)]


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at this repository."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def test_exports_agree_with_pytorch_on_real_images(exported, real_images):
    root = exported.bundle_dir
    inputs = preprocess(root, real_images)
    assert inputs.shape == (2, 1, 128, 128) and 0.0 <= float(inputs.min()) and float(inputs.max()) <= 1.0
    network = bundle_network(root)
    agreement = compare_exports(network, inputs, torchscript=root / "models" / "model.ts",
                                onnx=root / "models" / "model.onnx")
    print(f"agreement on {[Path(p).name for p in real_images]}: {agreement}")
    assert agreement["torchscript"] <= 1e-6
    assert agreement["onnx"] <= 1e-4
    with torch.no_grad():
        assert float(network(inputs).std()) > 1e-3  # the comparison is about outputs that differ per image
    # the exporter checked the same (on random inputs) and says so
    assert set(exported.agreement) == {"torchscript", "onnx"} and exported.agreement["onnx"] <= 1e-4


def test_onnx_takes_any_batch_and_image_size(exported):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported.bundle_dir / "models" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    # the logits first; the saliency layer's activations (conv3) second, for Grad-CAM beside ONNX Runtime
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["pred", "saliency_activations"]
    network = bundle_network(exported.bundle_dir)
    x = torch.rand(3, 1, 96, 80, generator=torch.Generator().manual_seed(1))
    output, activations = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(output, network(x).numpy(), atol=1e-4)
        np.testing.assert_allclose(activations, network.conv3(network.conv2(network.conv1(x))).numpy(), atol=1e-4)
    assert output.shape == (3, len(CLASSES)) and activations.shape[:2] == (3, 128)


def test_torchscript_carries_metadata_and_config(exported):
    from monai.data import load_net_with_metadata

    module, meta, extra = load_net_with_metadata(str(exported.bundle_dir / "models" / "model.ts"),
                                                 more_extra_files=("inference.json",))
    assert meta["version"] == json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["version"]
    assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == CLASSES
    assert json.loads(extra["inference.json"])["class_names"] == CLASSES


def test_bundle_layout_metadata_card_and_large_files(exported):
    root = exported.bundle_dir
    for path in ("configs/inference.json", "configs/metadata.json", "configs/logging.conf", "configs/evaluate.json",
                 "models/model.pt", "models/model.ts", "models/model.onnx", "docs/README.md",
                 "docs/data_license.txt", "LICENSE", "large_files.yml", "bundle/__init__.py",
                 "bundle/networks/student.py"):
        assert (root / path).is_file(), path
    assert not list(root.rglob("__pycache__")) and not list(root.rglob("*.pyc"))
    assert (root / "configs" / "inference.json").read_bytes() == (REPO_ROOT / "configs" / "inference.json").read_bytes()
    assert (root / "LICENSE").read_bytes() == (REPO_ROOT / "LICENSE").read_bytes()
    weights = torch.load(root / "models" / "model.pt", weights_only=True)
    assert weights.keys() == bundle_network(root).state_dict().keys()

    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == {}  # nothing was measured for random weights, so nothing is claimed
    card = (root / "docs" / "README.md").read_text()
    for expected in ("Not for clinical use", "## Intended use", "## Data", "## Performance", "## Limitations",
                     "Not measured", "113,349 parameters", "ckpt_export", "onnx_export"):
        assert expected in card, expected
    from bundle.export import _markdown_section

    main_job = _markdown_section((REPO_ROOT / "docs" / "results.md").read_text(), "The main job")
    assert main_job and main_job.split("\n", 1)[1].strip() in card  # the measured reference numbers, verbatim
    assert "Training data: not stated" in (root / "docs" / "data_license.txt").read_text()

    large = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    assert [f["path"] for f in large] == ["models/model.pt", "models/model.ts", "models/model.onnx"]
    for entry in large:
        assert entry["hash_type"] == "sha256" and len(entry["hash_val"]) == 64 and entry["hash_val"] in card
    # the Model Zoo tool fetches them back (from the file:// URLs) and checks the hashes
    from monai.bundle import download_large_files

    copy = root.parent / "large_files_copy"
    shutil.copytree(root, copy)
    for model in (copy / "models").iterdir():
        model.unlink()
    download_large_files(bundle_path=str(copy))
    for entry in large:
        assert (copy / entry["path"]).read_bytes() == (root / entry["path"]).read_bytes()


def test_zip_unzipped_alone_runs_inference_in_a_fresh_process(exported, real_images, tmp_path):
    with zipfile.ZipFile(exported.zip_path) as archive:
        names = archive.namelist()
        version = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["version"]
        assert exported.zip_path.name == f"{NAME}_v{version}.zip"
        assert all(n.startswith(f"{NAME}/") for n in names) and f"{NAME}/models/model.ts" in names
        archive.extractall(tmp_path / "clean")
    root = tmp_path / "clean" / NAME
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(real_images[0], inputs / "nih.png")
    shutil.copy(real_images[1], inputs / "IM0001")
    env = _clean_env()
    where = subprocess.run([sys.executable, "-c", "import bundle; print(bundle.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=300)
    assert Path(where.stdout.strip()).resolve() == (root / "bundle" / "__init__.py").resolve()

    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                             "--dataset_dir", str(inputs), "--device", "cpu"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = root / "outputs" / "inference" / "predictions.csv"
    rows = {Path(r["image"]).name: r for r in csv.DictReader(table.open())}
    assert set(rows) == {"nih.png", "IM0001"} and all(r["status"] == "ok" for r in rows.values())
    expected = reference_probabilities(root, [inputs / "nih.png", inputs / "IM0001"])
    for row, probabilities in zip((rows["nih.png"], rows["IM0001"]), expected):
        assert [float(row[c]) for c in CLASSES] == pytest.approx(probabilities.tolist(), abs=1e-5)
    assert list((root / "outputs" / "inference" / "saliency").glob("IM0001_*.png"))


def test_download_from_a_file_url_and_load_offline(exported, real_images, tmp_path):
    """``monai.bundle.download`` from a file:// URL, then ``load`` of both models, in a fresh process."""
    inputs = preprocess(exported.bundle_dir, real_images)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = f"""
import json, sys, torch
from monai.bundle import download, load
name, parent = {NAME!r}, {str(tmp_path / 'downloads')!r}
download(name=name, url={exported.zip_path.resolve().as_uri()!r}, bundle_dir=parent, progress=False)
sys.path.insert(0, parent + '/' + name)  # as `monai.bundle run` and MONAI Label do: the network class is in bundle/
network = load(name, bundle_dir=parent, workflow_type='inference', device='cpu').eval()
module, meta, extra = load(name, bundle_dir=parent, load_ts_module=True, device='cpu')
import bundle
x = torch.load({str(tmp_path / 'inputs.pt')!r})
with torch.no_grad():
    print(json.dumps({{'code': bundle.__file__, 'version': meta['version'],
                      'pytorch': network(x).tolist(), 'torchscript': module(x).tolist()}}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_clean_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(loaded["code"]).resolve() == (tmp_path / "downloads" / NAME / "bundle" / "__init__.py").resolve()
    version = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["version"]
    assert (tmp_path / "downloads" / f"{NAME}.zip").is_file() and loaded["version"] == version
    with torch.no_grad():
        reference = bundle_network(exported.bundle_dir)(inputs)
    assert torch.allclose(torch.tensor(loaded["pytorch"]), reference, atol=1e-6)
    assert torch.allclose(torch.tensor(loaded["torchscript"]), reference, atol=1e-6)


def test_documented_export_commands_rebuild_agreeing_models(exported, real_images, tmp_path):
    """The model card's `python -m monai.bundle ckpt_export` / `onnx_export` lines, run in the bundle as written."""
    root = tmp_path / NAME
    shutil.copytree(exported.bundle_dir, root)
    for name in ("model.ts", "model.onnx"):
        (root / "models" / name).unlink()
    card = (root / "docs" / "README.md").read_text()
    commands = [line for line in card.splitlines() if line.startswith("python -m monai.bundle ") and "_export" in line]
    assert len(commands) == 2
    # one process runs both command lines as `python -m monai.bundle ...` would (startup is the slow part)
    driver = ("import runpy, shlex, sys\n"
              f"for line in {commands!r}:\n"
              "    sys.argv = ['monai.bundle'] + shlex.split(line)[3:]\n"
              "    runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)\n")
    result = subprocess.run([sys.executable, "-c", driver], cwd=root, env=_clean_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    agreement = compare_exports(bundle_network(root), preprocess(root, real_images),
                                torchscript=root / "models" / "model.ts", onnx=root / "models" / "model.onnx")
    assert agreement["torchscript"] <= 1e-6 and agreement["onnx"] <= 1e-4


def _teacher():
    from bundle.networks import EfficientNetEnsemble

    # one member keeps the test short; B1 ... B7 are the same MONAI code with more blocks
    return EfficientNetEnsemble(("efficientnet-b0",), in_channels=1, out_channels=len(CLASSES))


def _assistant():
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(CLASSES))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["teacher", "assistant"])
def test_teacher_and_assistant_export_and_agree(stage, real_images, tmp_path):
    from monai.bundle import ckpt_export, onnx_export

    from bundle.export import ONNX_CONVERTER_KWARGS

    targets = {"teacher": {"_target_": "bundle.networks.EfficientNetEnsemble", "model_names": ["efficientnet-b0"]},
               "assistant": {"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 2}}
    config = {"imports": ["$import bundle"], "class_names": CLASSES,
              "network_def": {**targets[stage], "in_channels": 1, "out_channels": "$len(@class_names)"}}
    (tmp_path / "inference.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    network = _teacher() if stage == "teacher" else _assistant()
    if stage == "teacher":  # its heads start at zero: give them weights, or every output is 0
        for member in network.members:
            torch.nn.init.normal_(member._fc.weight, std=0.5)
    network.train()
    with torch.no_grad():  # BatchNorm statistics off their defaults
        for _ in range(3):
            network(torch.rand(4, 1, 64, 64))
    torch.save(network.state_dict(), tmp_path / "model.pt")
    network.eval()
    common = {"net_id": "network_def", "ckpt_file": str(tmp_path / "model.pt"),
              "meta_file": str(REPO_ROOT / "configs" / "metadata.json"),
              "config_file": str(tmp_path / "inference.json")}
    ckpt_export(filepath=str(tmp_path / "model.ts"), use_trace=False, **common)
    onnx_export(filepath=str(tmp_path / "model.onnx"), use_trace=True, input_shape=[1, 1, 64, 64],
                converter_kwargs=dict(ONNX_CONVERTER_KWARGS), **common)
    images = torch.nn.functional.interpolate(preprocess(REPO_ROOT, real_images), size=(64, 64), mode="area")
    agreement = compare_exports(network, images, torchscript=tmp_path / "model.ts", onnx=tmp_path / "model.onnx")
    print(f"{stage}: {agreement}")
    with torch.no_grad():
        assert float(network(images).abs().max()) > 1e-2
    assert agreement["torchscript"] <= 1e-5 and agreement["onnx"] <= 1e-4


def test_missing_and_mismatched_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "junk.pt")
    two_classes = tmp_path / "two" / "model.pt"
    two_classes.parent.mkdir()
    torch.manual_seed(0)
    from bundle.networks import ThreeConvStudent

    torch.save(ThreeConvStudent(in_channels=1, out_channels=2).state_dict(), two_classes)
    schema = require_shared("../monai/meta_schema_20240725.json")
    with pytest.raises(ExportError, match=r"classifier.weight: checkpoint \(2, 128\), network \(5, 128\)"):
        export_bundle(two_classes, tmp_path / "out", schema=schema)
    assert not (tmp_path / "out" / NAME).exists()  # nothing half-written
    torch.save({"network": torch.load(random_student_checkpoint(tmp_path / "s" / "model.pt")), "epoch": 3},
               tmp_path / "last.pt")
    assert read_state_dict(tmp_path / "last.pt").keys() == ThreeConvStudent(1, 5).state_dict().keys()
    torch.save({"model": {"w": torch.zeros(1)}, "network": {"w": torch.zeros(1)}}, tmp_path / "two_nets.pt")
    with pytest.raises(CheckpointError, match="--key_in_ckpt"):
        read_state_dict(tmp_path / "two_nets.pt")
    from monai.networks.nets import DenseNet121

    torch.save(DenseNet121(spatial_dims=2, in_channels=1, out_channels=5).state_dict(), tmp_path / "assistant.pt")
    with pytest.raises(ExportError, match="saved from another network"):
        export_bundle(tmp_path / "assistant.pt", tmp_path / "out", schema=schema)


def test_another_model_exports_with_its_classes_metrics_and_data_license(tmp_path):
    """A two-class model (e.g. PneumoniaMNIST at 28 px) with the metrics.json its training wrote."""
    from bundle.networks import ThreeConvStudent

    torch.manual_seed(0)
    folder = tmp_path / "pneumonia"
    folder.mkdir()
    torch.save(ThreeConvStudent(in_channels=1, out_channels=2).state_dict(), folder / "model.pt")
    metrics = {"auc_macro": 0.9751, "accuracy": 0.9087, "f1_macro": 0.9, "class_names": ["Normal", "Pneumonia"],
               "dataset": "pneumoniamnist", "split": "validation", "epoch": 10, "num_samples": 524,
               "auc/Normal": 0.9751, "auc/Pneumonia": 0.9751}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    schema = require_shared("../monai/meta_schema_20240725.json")
    with pytest.raises(ExportError, match="measured on classes"):
        export_bundle(folder / "model.pt", tmp_path / "out", "cxr_pneumonia_classification", schema=schema,
                      overrides={"class_names": ["Normal", "Opacity"], "task": "multiclass"}, zip_bundle=False)
    result = export_bundle(folder / "model.pt", tmp_path / "out", "cxr_pneumonia_classification", schema=schema,
                           overrides={"class_names": ["Normal", "Pneumonia"], "task": "multiclass", "image_size": 28},
                           zip_bundle=False)
    root = result.bundle_dir
    config = json.loads((root / "configs" / "inference.json").read_text())
    assert config["class_names"] == ["Normal", "Pneumonia"] and config["image_size"] == 28
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    fmt = metadata["network_data_format"]
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "Normal", "1": "Pneumonia"}
    assert fmt["outputs"]["pred"]["num_channels"] == 2 and fmt["inputs"]["image"]["spatial_shape"] == [28, 28]
    assert metadata["eval_metrics"] == {"val_auc_macro": 0.9751, "val_accuracy": 0.9087, "val_f1_macro": 0.9}
    card = (root / "docs" / "README.md").read_text()
    assert "validation split of pneumoniamnist, 524 images, epoch 10" in card and "| auc_macro | 0.975 |" in card
    assert "softmax over classes" in card and "0 = Normal, 1 = Pneumonia" in card
    assert "CC BY 4.0" in (root / "docs" / "data_license.txt").read_text()
    assert result.zip_path is None and result.agreement["torchscript"] <= 1e-6
    with pytest.raises(ExportError, match="exists: pass --overwrite"):
        export_bundle(folder / "model.pt", tmp_path / "out", "cxr_pneumonia_classification", schema=schema)


def _export_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_bundle", REPO_ROOT / "scripts" / "export_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reports_agreement_and_fails_clearly(tmp_path, capsys):
    module = _export_script()
    schema = str(require_shared("../monai/meta_schema_20240725.json"))
    missing = ["--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out"), "--schema", schema]
    assert module.main(missing) == 1
    assert "export failed: checkpoint not found" in capsys.readouterr().err
    checkpoint = random_student_checkpoint(tmp_path / "model.pt")
    assert module.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "out"), "--schema", schema,
                        "--name", "cxr_student_classification", "--no_zip", "--set", "threshold=0.3"]) == 0
    printed = capsys.readouterr().out
    assert "torchscript vs PyTorch: max |difference| of the logits = 0" in printed
    assert json.loads((tmp_path / "out" / "cxr_student_classification" / "configs" / "inference.json").read_text())[
        "threshold"] == 0.3


SCHEMA_URL = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["schema"]


@pytest.fixture
def ordinary_clone(tmp_path, monkeypatch):
    """No ../shared copy of the schema and an empty user cache, as in a clone on a user's machine."""
    import bundle.export.package

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("CXR_DATA_ROOT", raising=False)
    monkeypatch.setattr(bundle.export.package, "local_schema_copies",
                        lambda repo_root, name="meta_schema_20240725.json": [cache / "cxr-distill" / name])
    return cache / "cxr-distill"


def _offline(monkeypatch) -> list[str]:
    """MONAI's download_url failing as it does without a network; returns the URLs it was asked for."""
    import urllib.error

    import monai.apps.utils

    asked: list[str] = []

    def no_network(url, filepath, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(monai.apps.utils, "download_url", no_network)
    return asked


def test_export_without_any_schema_warns_on_the_last_line_and_exports(tmp_path, ordinary_clone, monkeypatch,
                                                                     capsys):
    asked = _offline(monkeypatch)
    checkpoint = random_student_checkpoint(tmp_path / "model.pt")
    assert _export_script().main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "out"), "--no_zip"]) == 0
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last == (f"warning: configs/metadata.json was not validated against the bundle schema: {SCHEMA_URL} could "
                    "not be downloaded (URLError: <urlopen error [Errno -2] Name or service not known>); the bundle "
                    "was exported without that check (pass --schema with a local copy of the schema to validate it)")
    assert asked == [SCHEMA_URL] and not list(ordinary_clone.glob("*"))  # tried once; nothing half-cached
    root = tmp_path / "out" / NAME
    assert (root / "models" / "model.ts").is_file() and (root / "docs" / "README.md").is_file()
    assert "torchscript vs PyTorch: max |difference| of the logits = 0" in captured.out
    # --no_schema_download does not even try
    assert _export_script().main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "out"), "--no_zip",
                                  "--overwrite", "--no_schema_download"]) == 0
    assert asked == [SCHEMA_URL] and "downloading is off" in capsys.readouterr().err.strip().splitlines()[-1]
    # a --schema the user names must exist
    assert _export_script().main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "out2"), "--no_zip",
                                  "--schema", str(tmp_path / "missing.json")]) == 1
    assert "export failed: bundle schema not found" in capsys.readouterr().err


@pytest.fixture
def shared_schema():
    """The real schema, found before ``ordinary_clone`` hides ``$CXR_DATA_ROOT`` (request it first)."""
    return require_shared("../monai/meta_schema_20240725.json")


def test_schema_is_downloaded_with_monai_into_the_cache_and_then_read_offline(tmp_path, shared_schema, ordinary_clone,
                                                                              monkeypatch):
    import monai.apps.utils

    from bundle.export import ExportError, validate_metadata

    shared = shared_schema

    def download(url, filepath, **kwargs):  # what MONAI's download_url leaves behind when it succeeds
        assert url == SCHEMA_URL
        shutil.copy(shared, filepath)

    monkeypatch.setattr(monai.apps.utils, "download_url", download)
    result = export_bundle(random_student_checkpoint(tmp_path / "model.pt"), tmp_path / "out", zip_bundle=False)
    cached = ordinary_clone / "meta_schema_20240725.json"
    assert result.metadata_check.validated and result.metadata_check.schema == cached
    assert cached.read_bytes() == shared.read_bytes()

    _offline(monkeypatch)  # later exports need no network
    meta_file = result.bundle_dir / "configs" / "metadata.json"
    check = validate_metadata(meta_file, search=[cached])
    assert check.validated and check.schema == cached
    # metadata the schema rejects stops the export, whichever copy was used
    broken = json.loads(meta_file.read_text())
    del broken["version"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ExportError, match="is not valid against meta_schema_20240725.json"):
        validate_metadata(tmp_path / "broken.json", search=[cached])
    # a download that gives no JSON (a proxy's error page) is no schema, and is not cached
    cached.unlink()
    monkeypatch.setattr(monai.apps.utils, "download_url",
                        lambda url, filepath, **kwargs: Path(filepath).write_text("<html>blocked</html>"))
    check = validate_metadata(meta_file, search=[cached])
    assert not check.validated and "JSONDecodeError" in check.skipped_because and not cached.exists()
