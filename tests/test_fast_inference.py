"""Fast inference (docs/fast_inference.md): the ONNX Runtime backend, int8 export, folders read by DataLoader workers."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from bundle.export.exporters import ONNX_CONVERTER_KWARGS
from bundle.inference import BAD_INPUTS_EXIT_STATUS
from bundle.networks import ThreeConvStudent
from conftest import REPO_ROOT, require_shared, run_bundle
from test_inference import CLASSES, _mixed_folder, _phantom_png

pytest.importorskip("onnxruntime")


@pytest.fixture()
def model(tmp_path):
    """A 3-conv student's checkpoint and its ONNX export (TorchScript-based exporter, as the bundle exports)."""
    torch.manual_seed(0)
    network = ThreeConvStudent(in_channels=1, out_channels=len(CLASSES)).eval()
    checkpoint, onnx_file = tmp_path / "model.pt", tmp_path / "model.onnx"
    torch.save(network.state_dict(), checkpoint)
    torch.onnx.export(network, torch.rand(1, 1, 64, 64), str(onnx_file), **ONNX_CONVERTER_KWARGS)
    return checkpoint, onnx_file


def _rows(out):
    return {row["image"]: row for row in csv.DictReader((out / "predictions.csv").open())}


def _run(out, folder, checkpoint, **overrides):
    with pytest.raises(SystemExit) as info:
        run_bundle("configs/inference.json", "run", out, dataset_dir=str(folder), ckpt_path=str(checkpoint),
                   image_size=64, device="cpu", **overrides)
    assert info.value.code == BAD_INPUTS_EXIT_STATUS
    return _rows(out)


def test_onnxruntime_backend_gives_pytorchs_probabilities_and_pytorchs_maps(tmp_path, model):
    checkpoint, onnx_file = model
    folder = tmp_path / "inputs"
    folder.mkdir()
    for seed in range(4):
        _phantom_png(folder / f"case{seed}.png", seed)
    (folder / "truncated.png").write_bytes((folder / "case0.png").read_bytes()[:300])
    reference = _run(tmp_path / "pytorch", folder, checkpoint, threshold=0.4)
    onnx_rows = _run(tmp_path / "onnx", folder, checkpoint, threshold=0.4, backend="onnxruntime",
                     onnx_path=str(onnx_file), onnx_threads=1)
    assert set(onnx_rows) == set(reference)
    for image, row in reference.items():
        assert onnx_rows[image]["status"] == row["status"] and onnx_rows[image]["predicted"] == row["predicted"]
        if row["status"] == "ok":
            difference = max(abs(float(onnx_rows[image][c]) - float(row[c])) for c in CLASSES)
            assert difference <= 1e-4, (image, difference)
    assert "truncated" in onnx_rows[str(folder / "truncated.png")]["error"] or \
        onnx_rows[str(folder / "truncated.png")]["error"]
    # Grad-CAM with the onnxruntime backend: the same classes explained, the maps of the PyTorch network
    maps = {path.name: np.load(path) for path in (tmp_path / "pytorch" / "saliency").glob("*.npy")}
    onnx_maps = {path.name: np.load(path) for path in (tmp_path / "onnx" / "saliency").glob("*.npy")}
    assert maps and set(onnx_maps) == set(maps)
    for name, saliency in maps.items():
        np.testing.assert_allclose(onnx_maps[name], saliency, atol=1e-5)


def test_onnxruntime_backend_maps_from_the_exports_activations_in_the_config(tmp_path, model, monkeypatch):
    """configs/inference.json --backend onnxruntime on a model.onnx with saliency_activations: the evaluator's one
    ONNX Runtime run per batch gives the maps' activations (no PyTorch forward pass), the PyTorch backend's maps."""
    from bundle.handlers import SaliencyWriter

    checkpoint, _ = model
    network = ThreeConvStudent(in_channels=1, out_channels=len(CLASSES)).eval()
    network.load_state_dict(torch.load(checkpoint))
    onnx_file = _export_with_activations(network, "conv3", tmp_path / "with_activations.onnx", 64)
    folder = tmp_path / "inputs"
    folder.mkdir()
    for seed in range(3):
        _phantom_png(folder / f"case{seed}.png", seed)
    (folder / "truncated.png").write_bytes((folder / "case0.png").read_bytes()[:300])  # a row the batch drops
    reference = _run(tmp_path / "pytorch", folder, checkpoint, threshold=0.4, batch_size=4)
    monkeypatch.setattr(SaliencyWriter, "explain", lambda *a, **k: pytest.fail("mapped with the whole network"))
    onnx_rows = _run(tmp_path / "onnx", folder, checkpoint, threshold=0.4, batch_size=4, backend="onnxruntime",
                     onnx_path=str(onnx_file), onnx_threads=1)
    assert {image: row["predicted"] for image, row in onnx_rows.items()} == \
        {image: row["predicted"] for image, row in reference.items()}
    maps = {path.name: np.load(path) for path in (tmp_path / "pytorch" / "saliency").glob("*.npy")}
    onnx_maps = {path.name: np.load(path) for path in (tmp_path / "onnx" / "saliency").glob("*.npy")}
    assert len(maps) >= 3 and set(onnx_maps) == set(maps)
    for name, saliency in maps.items():
        np.testing.assert_allclose(onnx_maps[name], saliency, atol=1e-5)


def test_onnxruntime_backend_without_an_onnx_file_names_it(tmp_path, model):
    from bundle.error_report import data_error_in

    checkpoint, _ = model
    folder = tmp_path / "inputs"
    folder.mkdir()
    _phantom_png(folder / "case.png", 0)
    missing = tmp_path / "models" / "model.onnx"
    with pytest.raises(Exception) as info:
        run_bundle("configs/inference.json", "run", tmp_path / "out", dataset_dir=str(folder),
                   ckpt_path=str(checkpoint), image_size=64, device="cpu", backend="onnxruntime",
                   onnx_path=str(missing))
    error = data_error_in(info.value)
    assert isinstance(error, FileNotFoundError) and error.filename == str(missing)
    assert "scripts/export_bundle.py --onnx" in str(error)


@pytest.mark.timeout(300)
def test_folder_inference_with_workers_keeps_every_guarantee(tmp_path, model):
    """Two DataLoader workers: every file listed once, bad ones with their problem, the same numbers, exit status 3."""
    checkpoint, _ = model
    folder = tmp_path / "inputs"
    good, bad = _mixed_folder(folder)
    serial = _run(tmp_path / "serial", folder, checkpoint, saliency_enabled=False, batch_size=3)
    parallel = _run(tmp_path / "parallel", folder, checkpoint, saliency_enabled=False, batch_size=3,
                    num_workers=2)
    assert list(parallel) == list(serial)  # same files, same order
    assert {os.path.relpath(image, folder) for image in parallel} == good | set(bad)
    for image, row in parallel.items():
        name = os.path.relpath(image, folder)
        assert row["status"] == serial[image]["status"] == ("ok" if name in good else "error"), name
        assert row["error"] == serial[image]["error"]
        if name in bad:
            assert bad[name] in row["error"], (name, row["error"])
        else:
            assert all(abs(float(row[c]) - float(serial[image][c])) < 1e-6 for c in CLASSES)


def test_deploy_classify_with_onnxruntime_matches_pytorch(tmp_path, model):
    from bundle.deploy.classifier import classify
    from bundle.deploy.dicom_input import read_chest_radiograph
    from bundle.deploy.model import load_bundle

    checkpoint, onnx_file = model
    dicom = require_shared("dicom/chest_cr_monochrome1.dcm")
    radiograph = read_chest_radiograph(dicom)
    network = ThreeConvStudent(in_channels=1, out_channels=len(CLASSES)).eval()
    network.load_state_dict(torch.load(checkpoint))
    with_activations = _export_with_activations(network, "conv3", tmp_path / "with_activations.onnx", 64)
    results = {}
    for backend, path in (("pytorch", onnx_file), ("onnxruntime", onnx_file), ("onnxruntime+", with_activations)):
        bundle_model = load_bundle(checkpoint, device="cpu", overrides={
            "image_size": 64, "backend": backend.rstrip("+"), "onnx_path": str(path)})
        assert bundle_model.backend == backend.rstrip("+")
        results[backend] = classify(bundle_model, radiograph)
    reference = results["pytorch"]
    # without the activations output the whole PyTorch network maps; with it, the PyTorch tail: the same maps
    for onnx_result in (results["onnxruntime"], results["onnxruntime+"]):
        for finding, p in reference.probabilities.items():
            assert abs(onnx_result.probabilities[finding] - p) <= 1e-4
        assert onnx_result.positive == reference.positive
        top = int(np.argmax(list(reference.probabilities.values())))
        assert top in onnx_result.saliency_maps and top in reference.saliency_maps
        assert sorted(onnx_result.saliency_maps) == sorted(reference.saliency_maps)
        for k, saliency in reference.saliency_maps.items():
            np.testing.assert_allclose(onnx_result.saliency_maps[k], saliency, atol=1e-5)


@pytest.mark.timeout(600)
def test_int8_export_is_calibrated_on_training_images_and_checked_on_the_test_split(tmp_path, model):
    """quantize_int8 on real NIH radiographs: model_int8.onnx beside the fp32 model, its record, AUC per class."""
    from monai.bundle import ConfigParser

    from bundle.export.quantize import calibration_records, quantize_int8
    from bundle.runtime import OnnxRuntimeNetwork

    nih = require_shared("nih14_subset")
    _, onnx_file = model
    calibration, check, splits = calibration_records("nih", nih, split_seed=0, calibration_images=16)
    train = {r["image"] for r in splits.train}
    assert len(calibration) == 16 and all(r["image"] in train for r in calibration)
    assert not {r["image"] for r in check} & train
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    parser.update({"on_error": "record", "image_size": 64})
    preprocessing = parser.get_parsed_content("preprocessing")
    network = ThreeConvStudent(in_channels=1, out_channels=len(splits.class_names))
    fp32 = tmp_path / "nih.onnx"
    torch.onnx.export(network.eval(), torch.rand(1, 1, 64, 64), str(fp32), **ONNX_CONVERTER_KWARGS)
    out = tmp_path / "nih_int8.onnx"
    report = quantize_int8(fp32, out, preprocessing, calibration, check[:24], splits.class_names,
                           max_auc_drop=1.0, calibration_source={"dataset": "nih"})
    assert out.is_file() and out.stat().st_size < fp32.stat().st_size
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["calibration"]["images"] == 16 and record["calibration"]["files"] == [r["image"] for r in calibration]
    assert record["quant_format"] == "QDQ" and record["method"] == "minmax"
    check_result = record["check"]
    assert check_result["images"] == 24 and set(check_result["auc_change_per_class"]) <= set(splits.class_names)
    assert 0.0 < check_result["max_abs_probability_change"] < 0.2  # int8 close to fp32, not equal
    assert report.check["auc_macro_change"] == pytest.approx(check_result["auc_macro_change"])
    # the int8 model runs through the backend and agrees with the fp32 one to int8 precision
    image = torch.as_tensor(preprocessing({"image": check[0]["image"]})["image"])[None]
    a, b = OnnxRuntimeNetwork(fp32)(image), OnnxRuntimeNetwork(out)(image)
    assert torch.allclose(torch.sigmoid(a), torch.sigmoid(b), atol=0.05)


@pytest.mark.timeout(900)
def test_export_bundle_int8_writes_the_model_and_its_record_beside_the_fp32_one(tmp_path):
    """scripts/export_bundle.py --int8: model_int8.onnx and model_int8.json in models/, listed in large_files.yml."""
    import importlib.util

    nih = require_shared("nih14_subset")
    schema = require_shared("../monai/meta_schema_20240725.json")
    spec = importlib.util.spec_from_file_location("export_script", REPO_ROOT / "scripts" / "export_bundle.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    checkpoint = tmp_path / "nih" / "model.pt"
    checkpoint.parent.mkdir()
    torch.manual_seed(0)
    torch.save(ThreeConvStudent(in_channels=1, out_channels=14).state_dict(), checkpoint)
    from bundle.data import load_splits

    classes = load_splits("nih", nih).class_names
    code = script.main(["--ckpt", str(checkpoint), "--out", str(tmp_path / "export"), "--no_zip", "--schema",
                        str(schema), "--int8", "--calibration_dir", str(nih), "--calibration_dataset", "nih",
                        "--calibration_images", "8", "--int8_max_auc_drop", "1", "--set", "image_size=32",
                        f"class_names={json.dumps(classes)}"])
    assert code == 0
    models = tmp_path / "export" / "cxr_distill_student_classification" / "models"
    assert {p.name for p in models.iterdir()} >= {"model.pt", "model.ts", "model.onnx", "model_int8.onnx",
                                                 "model_int8.json"}
    record = json.loads((models / "model_int8.json").read_text())
    assert record["calibration"]["dataset"] == "nih" and record["calibration"]["images"] == 8
    assert record["check"]["split"] == "test" and record["check"]["images"] > 50
    assert set(record["check"]["auc_change_per_class"]) <= set(classes)
    assert "models/model_int8.onnx" in (models.parent / "large_files.yml").read_text()


@pytest.mark.timeout(900)
def test_benchmark_inference_prints_every_target(tmp_path, capsys):
    import importlib.util
    import shutil

    from PIL import Image

    require_shared("nih14_subset")
    require_shared("dicom/chest_cr_monochrome1.dcm")
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((require_shared("nih14_subset") / "images").glob("*.png"))[:6]:
        shutil.copy(path, folder / path.name)
    Image.new("L", (4, 4)).save(folder / "tiny.png")  # a bad file: listed, not fatal
    spec = importlib.util.spec_from_file_location("benchmark_inference", REPO_ROOT / "scripts" / "benchmark_inference.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "report.json"
    assert script.main(["--sections", "backends", "reader", "folder", "--networks", "student", "--repeats", "1",
                        "--batch_size", "2", "--calibration_images", "4", "--folder", str(folder), "--workers", "0",
                        "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [row["target"] for row in report["targets"]]
    assert names == ["3-conv student int8 vs fp32 throughput, batch 2", "3-conv student int8 vs fp32 throughput, batch 1",
                     "load_cxr vs decoder, PNG 1024 px", "load_cxr vs decoder, CR DICOM",
                     "folder inference 2 workers vs 0"]
    assert all(row["status"] in ("PASS", "FAIL") and row["value"] > 0 for row in report["targets"])
    assert [run["images"] for run in report["folder"]["runs"]] == [7, 7]
    assert all(run["bad"] == 1 for run in report["folder"]["runs"])
    assert report["backends"]["student"]["runs"]["onnxruntime int8, batch 2"]["images_per_s"] > 0
    printed = capsys.readouterr().out
    assert "folder inference 2 workers vs 0" in printed and ("PASS" in printed or "FAIL" in printed)


def test_deploy_command_line_with_the_onnxruntime_backend(tmp_path, model):
    """python -m bundle.deploy ... --backend onnxruntime --onnx-path: the same classification.json as PyTorch's."""
    import shutil

    from bundle.deploy import sdk_available

    if not sdk_available():
        if os.environ.get("CI") == "true":
            pytest.fail("MONAI Deploy App SDK not installed")
        pytest.skip("MONAI Deploy App SDK not installed")
    from bundle.deploy.__main__ import main

    checkpoint, onnx_file = model
    dicom = require_shared("dicom/chest_cr_monochrome1.dcm")
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    config = json.loads((REPO_ROOT / "configs" / "inference.json").read_text())
    config["image_size"] = 64
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    shutil.copy(REPO_ROOT / "configs" / "metadata.json", root / "configs" / "metadata.json")
    shutil.copy(checkpoint, root / "models" / "model.pt")
    records = {}
    for backend in ("pytorch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["bundle.deploy", "-i", str(dicom), "-o", str(out), "-m", str(root), "--backend", backend,
                     "--onnx-path", str(onnx_file)]) == 0
        records[backend] = json.loads((out / "classification.json").read_text())
    for finding, p in records["pytorch"]["probabilities"].items():
        assert abs(records["onnxruntime"]["probabilities"][finding] - p) <= 1e-4
    assert list((tmp_path / "onnxruntime" / "saliency").glob("*.png"))


# ------------------------------------------------------------------ Grad-CAM from ONNX Runtime's activations


def _net_with_spread_logits(name: str, classes: int = 5, size: int = 64):
    from bundle.networks import build_network

    torch.manual_seed(0)
    network, size = build_network(name, classes, size)
    network.eval()
    with torch.no_grad():  # untrained logits all tie; spread them so the explained classes are well defined
        last = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.linspace(-2.0, 2.0, classes))
    return network, size


def _export_with_activations(network, layer, path, size):
    from bundle.export.exporters import SALIENCY_OUTPUT, add_saliency_output

    torch.onnx.export(network, torch.rand(1, 1, size, size), str(path), **ONNX_CONVERTER_KWARGS)
    assert add_saliency_output(path, network, layer, [1, 1, size, size])
    import onnx

    outputs = [output.name for output in onnx.load(str(path)).graph.output]
    assert outputs == ["pred", SALIENCY_OUTPUT]  # the logits stay the first output
    return path


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("name", ["compact_student", "student"])
def test_onnxruntime_activations_give_the_pytorch_backends_maps_through_the_tail(tmp_path, name, method):
    """One ONNX Runtime run (logits + saliency activations), Grad-CAM through the PyTorch tail: PyTorch's maps."""
    from bundle.handlers import SaliencyWriter
    from bundle.networks import NETWORKS
    from bundle.runtime import OnnxRuntimeNetwork

    network, size = _net_with_spread_logits(name)
    layer = NETWORKS[name].saliency_layer
    onnx_file = _export_with_activations(network, layer, tmp_path / "model.onnx", size)
    predictor = OnnxRuntimeNetwork(onnx_file, threads=1)
    assert predictor.gives_activations
    writer = SaliencyWriter(network, layer, tmp_path, [f"c{k}" for k in range(5)], method=method, threshold=0.3,
                            max_classes=3)
    images = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1))
    reference_logits, reference = writer.explain(images)  # the PyTorch backend: top class + the others explained
    explain = writer.explain
    writer.explain = lambda *a, **k: pytest.fail("fell back to the whole PyTorch network")
    logits, maps = writer.explain_onnx(predictor, images)
    writer.explain = explain
    assert torch.allclose(logits, reference_logits, atol=1e-4)
    assert [sorted(m) for m in maps] == [sorted(m) for m in reference] and all(len(m) == 3 for m in maps)
    for row in range(2):
        for k, saliency in reference[row].items():
            assert maps[row][k].shape == (1, size, size)
            np.testing.assert_allclose(maps[row][k].numpy(), saliency.numpy(), atol=1e-5)
    # the classes to explain may come from given probabilities (the evaluator's)
    chosen = torch.zeros(2, 5)
    chosen[:, 0] = 1.0
    _, maps = writer.explain_onnx(predictor, images, chosen)
    _, reference = writer.explain(images, chosen)
    assert [list(m) for m in maps] == [[0], [0]]
    np.testing.assert_allclose(maps[1][0].numpy(), reference[1][0].numpy(), atol=1e-5)


def test_onnxruntime_maps_fall_back_to_pytorch_without_activations_or_a_tail(tmp_path, model, caplog):
    """No saliency output (an older export), or a layer with no declared tail: the whole network's maps, said once."""
    import logging

    from bundle.handlers import SaliencyWriter
    from bundle.runtime import OnnxRuntimeNetwork

    checkpoint, onnx_file = model
    network = ThreeConvStudent(in_channels=1, out_channels=len(CLASSES)).eval()
    network.load_state_dict(torch.load(checkpoint))
    images = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    for layer, path in (("conv3", onnx_file), ("conv2", _export_with_activations(network, "conv3", tmp_path / "a.onnx", 64))):
        predictor = OnnxRuntimeNetwork(path, threads=1)
        writer = SaliencyWriter(network, layer, tmp_path, CLASSES, threshold=0.0, max_classes=2)
        assert (writer.tail_cam is None) == (layer == "conv2")
        with caplog.at_level(logging.INFO, logger="bundle.handlers.saliency"):
            caplog.clear()
            for _ in range(2):
                logits, maps = writer.explain_onnx(predictor, images)
        said = [r.message for r in caplog.records if "Grad-CAM maps from the PyTorch network" in r.message]
        assert len(said) == 1 and ("no saliency_activations output" in said[0] if layer == "conv3"
                                   else "declares no tail after 'conv2'" in said[0])
        reference_logits, reference = writer.explain(images)
        assert torch.allclose(logits, reference_logits, atol=1e-4)
        assert sorted(maps[0]) == sorted(reference[0])
        for k in reference[0]:
            np.testing.assert_allclose(maps[0][k].numpy(), reference[0][k].numpy(), atol=1e-5)


@pytest.mark.timeout(300)
def test_int8_model_with_activations_keeps_pytorchs_maps(tmp_path):
    """int8 logits are not the fp32 tail's (quantised outputs): the maps come from the PyTorch network, exact."""
    from monai.bundle import ConfigParser

    from bundle.export.quantize import calibration_records, quantize_int8
    from bundle.handlers import SaliencyWriter
    from bundle.runtime import OnnxRuntimeNetwork

    folder = require_shared("nih14_subset")
    network, size = _net_with_spread_logits("student", 14)
    fp32 = _export_with_activations(network, "conv3", tmp_path / "model.onnx", size)
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    parser.update({"on_error": "record", "image_size": size})
    preprocessing = parser.get_parsed_content("preprocessing")
    calibration, _, _ = calibration_records("nih", folder, 0, 4, "test")
    int8 = tmp_path / "model_int8.onnx"
    quantize_int8(fp32, int8, preprocessing, calibration, [], [str(k) for k in range(14)])
    predictor = OnnxRuntimeNetwork(int8, threads=1)
    assert predictor.gives_activations
    writer = SaliencyWriter(network, "conv3", tmp_path, [str(k) for k in range(14)], max_classes=1, threshold=2.0)
    image = torch.as_tensor(preprocessing({"image": str(calibration[0]["image"])})["image"])[None]
    logits, maps = writer.explain_onnx(predictor, image)
    reference_logits, reference = writer.explain(image)
    assert (logits - reference_logits).abs().max() < 0.1
    top = int(logits.argmax())
    np.testing.assert_allclose(maps[0][top].numpy(), writer.explain(image, torch.nn.functional.one_hot(
        torch.tensor([top]), 14).float())[1][0][top].numpy(), atol=1e-6)
    assert predictor in writer._tail_mismatch  # not asked for its activations again


@pytest.mark.timeout(600)
def test_benchmark_end_to_end_times_every_path_and_checks_the_maps(tmp_path):
    """--sections end_to_end: PyTorch, ONNX Runtime fp32 / int8 with the tail's map, and int8 + PyTorch's map; the
    fp32 tail's map is the PyTorch backend's, and the target names the fastest path that gives that map."""
    import importlib.util

    require_shared("nih14_subset")
    require_shared("dicom/chest_cr_monochrome1.dcm")
    spec = importlib.util.spec_from_file_location("benchmark_inference", REPO_ROOT / "scripts" / "benchmark_inference.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "report.json"
    assert script.main(["--sections", "end_to_end", "--repeats", "1", "--calibration_images", "4",
                        "--out", str(out)]) == 0
    e2e = json.loads(out.read_text())["end_to_end"]
    assert set(e2e["totals"]) == {"pytorch", "onnxruntime fp32 + tail map", "onnxruntime int8 + tail map",
                                  "onnxruntime int8 + pytorch map"}
    assert e2e["map_agreement_with_pytorch"]["onnxruntime fp32"]["same_class"]
    assert e2e["map_agreement_with_pytorch"]["onnxruntime fp32"]["max_abs_map_difference"] <= 1e-4
    assert e2e["best"] in e2e["totals"] and e2e["ratio_best_vs_pytorch"] > 0
    (target,) = [row for row in json.loads(out.read_text())["targets"] if row["target"] == "end to end < 40 ms"]
    assert e2e["best"] in target["detail"] and target["status"] in ("PASS", "FAIL")
