""":func:`export_bundle`: a checkpoint in, a Model Zoo bundle folder and its zip out (layout: :mod:`bundle.export`).

Each step stops with an :class:`~bundle.export.errors.ExportError` that says what is wrong, and
nothing is left half-written: the bundle is assembled in a staging folder beside its destination
and moved there whole.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoints import CheckpointError, check_state_dict, read_state_dict
from bundle.data.errors import CXRDataError
from bundle.thresholds import read_thresholds_file

from .data_license import data_license
from .errors import ExportError
from .exporters import add_saliency_output, check_agreement, compare_exports, export_onnx, export_torchscript
from .files import file_sha256, large_files_yaml, write_zip
from .model_card import model_card
from .quantize import Int8Report, calibration_records, quantize_int8
from .schema import MetadataCheck, local_schema_copies, validate_metadata

__all__ = ["DEFAULT_NAME", "ExportResult", "export_bundle"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the ``bundle`` package, shipped inside every export
REPO_ROOT = PACKAGE_DIR.parent

#: ``classification`` in the name: MONAI Label's monaibundle app infers a bundle's task from its folder name
#: (``BundleInferTask._get_type``) and treats anything else as segmentation.
DEFAULT_NAME = "cxr_distill_student_classification"

_CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".conf")
_SUMMARY_METRICS = ("auc_macro", "accuracy", "f1_macro", "precision_macro", "recall_macro")


@dataclass
class ExportResult:
    """What :func:`export_bundle` made, and whether ``metadata.json`` was validated against the schema."""

    bundle_dir: Path
    zip_path: Path | None
    agreement: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    metadata_check: MetadataCheck | None = None
    thresholds: dict[str, float] | None = None  # the per-class decision thresholds written into inference.json
    int8: Int8Report | None = None


@dataclass
class _Model:
    """The checked network and what the bundle's files say about it."""

    network: torch.nn.Module
    state: dict[str, torch.Tensor]
    config: dict[str, Any]  # inference.json with the overrides applied (unparsed)
    class_names: list[str]
    image_size: int
    thresholds: dict[str, float] | None = None


def _parse_value(text: str) -> Any:
    """A ``--set id=value`` value: JSON when it parses, else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _load_checked_model(ckpt: str | os.PathLike, key_in_ckpt: str | None, repo_root: Path,
                        overrides: Mapping[str, Any] | None) -> _Model:
    """The weights, checked against ``network_def`` (overrides applied) before anything is written."""
    from monai.bundle import ConfigParser

    try:
        state = read_state_dict(ckpt, key_in_ckpt)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "inference.json"))
    for key, value in (overrides or {}).items():
        parser[key] = value
    config = copy.deepcopy(parser.get())
    class_names = list(parser.get_parsed_content("class_names"))
    network = parser.get_parsed_content("network_def")
    try:
        check_state_dict(network, state, ckpt, "network_def", class_names)
    except CheckpointError as error:
        raise ExportError(f"{error}\n  (set network_def, class_names and task to the model's: --set "
                          f"'network_def={{...}}' 'class_names=[...]' task=multiclass)") from None
    network.load_state_dict(state, strict=True)
    thresholds = None
    if "threshold" not in (overrides or {}) and parser.get_parsed_content("task") == "multilabel":
        # the checkpoint's per-class thresholds (bundle.thresholds) become the exported inference.json's own
        content = read_thresholds_file(ckpt) if not key_in_ckpt else None
        if content is not None and content.get("class_names") == class_names:
            thresholds = {name: float(content["thresholds"][name]) for name in class_names}
            config["threshold"] = thresholds
    return _Model(network.eval(), state, config, class_names, int(parser.get_parsed_content("image_size")),
                  thresholds)


def _read_metrics(ckpt: str | os.PathLike, metrics: str | os.PathLike | None,
                  class_names: list[str]) -> dict[str, Any] | None:
    """The checkpoint's ``metrics.json`` (given, or beside it), refused when measured on other classes."""
    path = Path(metrics) if metrics else Path(ckpt).with_name("metrics.json")
    content = json.loads(path.read_text()) if path.is_file() else None
    if metrics is not None and content is None:
        raise ExportError(f"metrics file not found: {metrics}")
    if content and content.get("class_names") not in (None, class_names):
        raise ExportError(f"{path} was measured on classes {content['class_names']}, but the "
                          f"exported config has {class_names}: set class_names (and task, image_size) to the "
                          "model's, e.g. --set 'class_names=[...]' task=multiclass image_size=28")
    return content


def _eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``metadata.json``'s ``eval_metrics``: ``val_auc_macro`` ... of the checkpoint's own measurement."""
    split = "val" if metrics.get("split", "validation") == "validation" else str(metrics.get("split"))
    return {f"{split}_{k}": round(float(metrics[k]), 4) for k in _SUMMARY_METRICS
            if isinstance(metrics.get(k), (int, float))}


def _bundle_metadata(repo_root: Path, model: _Model, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata.json`` with ``network_data_format`` equal to the exported config (classes, input size)."""
    metadata = json.loads((repo_root / "configs" / "metadata.json").read_text())
    fmt = metadata["network_data_format"]
    pred = fmt["outputs"]["pred"]
    pred["num_channels"] = len(model.class_names)
    pred["channel_def"] = {str(i): name for i, name in enumerate(model.class_names)}
    fmt["inputs"]["image"]["spatial_shape"] = [model.image_size, model.image_size]
    metadata["eval_metrics"] = _eval_metrics(metrics) if metrics else {}
    return metadata


def _write_sources(root: Path, repo_root: Path, model: _Model, metadata: Mapping[str, Any],
                   overridden: bool) -> None:
    """configs/ (every config, so evaluation and training run from the bundle too), the code, LICENSE, weights."""
    for folder in ("configs", "models", "docs"):
        (root / folder).mkdir(parents=True)
    for source in sorted((repo_root / "configs").iterdir()):
        if source.is_file() and source.suffix in _CONFIG_SUFFIXES:
            shutil.copy(source, root / "configs" / source.name)
    if overridden:
        (root / "configs" / "inference.json").write_text(json.dumps(model.config, indent=4) + "\n")
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n")
    shutil.copytree(PACKAGE_DIR, root / "bundle", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    shutil.copy(repo_root / "LICENSE", root / "LICENSE")
    torch.save(model.state, root / "models" / "model.pt")


def _export_and_compare(root: Path, model: _Model, onnx: bool) -> tuple[list[str], dict[str, float]]:
    """TorchScript (and ONNX) made from the bundle itself, as the Model Zoo commands run them, then checked."""
    model_files = ["models/model.pt", "models/model.ts"]
    export_torchscript(root)
    size = model.image_size
    if onnx:
        export_onnx(root, input_shape=[1, 1, size, size])
        # the saliency layer's activations as a second output: Grad-CAM beside ONNX Runtime (bundle.runtime)
        add_saliency_output(root / "models" / "model.onnx", model.network, model.config.get("saliency_layer"),
                            [1, 1, size, size])
        model_files.append("models/model.onnx")
    inputs = torch.rand((2, 1, size, size), generator=torch.Generator().manual_seed(0))
    agreement = compare_exports(model.network, inputs, torchscript=root / "models" / "model.ts",
                                onnx=root / "models" / "model.onnx" if onnx else None)
    check_agreement(agreement)
    return model_files, agreement


def _export_int8(root: Path, model: _Model, options: Mapping[str, Any], dataset: str | None) -> Int8Report:
    """``models/model_int8.onnx`` (+ ``model_int8.json``) from ``models/model.onnx``, calibrated on the training split
    of the data set named in ``options`` and checked on its test split (:mod:`bundle.export.quantize`)."""
    from monai.bundle import ConfigParser

    name = options.get("dataset") or dataset
    folder = options.get("dataset_dir")
    if not name or not folder:
        raise ExportError("--int8 needs the model's training data for calibration: --calibration_dir <folder> "
                          "(and --calibration_dataset <name> when metrics.json does not say it)")
    seed = int(options.get("split_seed", 0))
    check_split = str(options.get("check_split", "test"))
    try:
        calibration, check, _ = calibration_records(name, folder, seed, int(options.get("images", 128)), check_split)
    except CXRDataError as error:
        raise ExportError(f"int8 calibration data: {error}") from None
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), "on_error": "record", "image_size": model.image_size})
    preprocessing = parser.get_parsed_content("preprocessing")
    source = {"dataset": name, "dataset_dir": str(folder), "split": "train", "split_seed": seed,
              "how": f"the first {int(options.get('images', 128))} images of the training split in a seeded "
                     f"(split_seed) random order, read with configs/inference.json#preprocessing"}
    return quantize_int8(root / "models" / "model.onnx", root / "models" / "model_int8.onnx", preprocessing,
                         calibration, check, model.class_names, str(model.config.get("task", "multilabel")),
                         method=str(options.get("method", "minmax")),
                         max_auc_drop=float(options.get("max_auc_drop", 0.005)), calibration_source=source,
                         check_split=check_split)


def _write_docs(root: Path, name: str, repo_root: Path, model: _Model, metadata: Mapping[str, Any],
                metrics: Mapping[str, Any] | None, dataset: str | None, model_files: list[str],
                data_license_file: str | os.PathLike | None) -> None:
    """docs/README.md (the model card) and docs/data_license.txt."""
    from bundle.networks import count_parameters

    results_md = repo_root / "docs" / "results.md"
    hashes = {f: file_sha256(root / f) for f in model_files}
    (root / "docs" / "README.md").write_text(model_card(
        name, metadata, {**model.config, "class_names": model.class_names, "image_size": model.image_size},
        metrics=metrics, results_md=results_md.read_text() if results_md.is_file() else None,
        dataset=dataset, parameters=count_parameters(model.network), files=hashes))
    if data_license_file:
        shutil.copy(data_license_file, root / "docs" / "data_license.txt")
    else:
        (root / "docs" / "data_license.txt").write_text(data_license(dataset))


def export_bundle(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    name: str = DEFAULT_NAME,
    *,
    key_in_ckpt: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    metrics: str | os.PathLike | None = None,
    dataset: str | None = None,
    data_license_file: str | os.PathLike | None = None,
    onnx: bool = False,
    zip_bundle: bool = True,
    url_base: str | None = None,
    schema: str | os.PathLike | None = None,
    download_schema: bool = True,
    overwrite: bool = False,
    repo_root: str | os.PathLike = REPO_ROOT,
    int8: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Assemble ``<out>/<name>/`` and ``<out>/<name>_v<version>.zip`` from a checkpoint (see :mod:`bundle.export`).

    Steps, each of which stops with an :class:`ExportError` that says what is wrong: read the weights and
    check them against ``network_def`` (with ``overrides`` applied); copy configs, code, license and docs;
    validate ``metadata.json`` against the bundle schema when one can be had (else say so in
    ``ExportResult.metadata_check``); export TorchScript (and ONNX) with MONAI's exporters from the new
    bundle and compare them with the PyTorch network; write the model card, ``large_files.yml`` and the zip.

    Args:
        ckpt: weights (``outputs/student/model.pt``) or a nested checkpoint with ``key_in_ckpt``.
        out: parent folder of the bundle folder and the zip.
        name: bundle (folder) name; keep ``classification`` in it for MONAI Label.
        overrides: config ids to set in the exported ``inference.json`` (``class_names``, ``task``,
            ``image_size``, ``network_def`` ...); ``metadata.json``'s ``network_data_format`` follows them.
            Without a ``threshold`` among them, a multi-label checkpoint's per-class decision thresholds
            (``<checkpoint stem>.thresholds.json`` beside it, :mod:`bundle.thresholds`) become the exported
            ``inference.json``'s ``threshold`` (``{class: threshold}``).
        metrics: the checkpoint's ``metrics.json`` (default: beside ``ckpt``, when there): numbers for the
            model card and ``eval_metrics``; its ``class_names`` must match the config's.
        dataset: what the weights were trained on, for the card and ``docs/data_license.txt``
            (default: ``metrics.json``'s ``dataset``).
        data_license_file: text to ship as ``docs/data_license.txt`` instead of the generated one.
        onnx: also export ``models/model.onnx``.
        url_base: where the model files will be hosted, for ``large_files.yml``.
        schema: local copy of the metadata schema (must exist); default: a copy found by
            :func:`~bundle.export.schema.local_schema_copies`, else MONAI's download (``download_schema``).
        download_schema: download the schema when no local copy is found.
        overwrite: replace an existing ``<out>/<name>``.
        int8: also write ``models/model_int8.onnx`` (implies ONNX), calibrated and checked as
            :mod:`bundle.export.quantize` says; keys ``dataset``, ``dataset_dir`` (required), ``split_seed``,
            ``images``, ``method``, ``check_split``, ``max_auc_drop``.
    """
    repo_root = Path(repo_root)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ExportError(f"bundle name {name!r}: use letters, digits, '_', '-' or '.' (Model Zoo style: "
                          "cxr_distill_student_classification)")
    out = Path(out)
    bundle_dir = out / name
    if bundle_dir.exists() and not overwrite:
        raise ExportError(f"{bundle_dir} exists: pass --overwrite to replace it")

    model = _load_checked_model(ckpt, key_in_ckpt, repo_root, overrides)
    metrics_content = _read_metrics(ckpt, metrics, model.class_names)
    dataset = dataset or (metrics_content or {}).get("dataset")
    metadata = _bundle_metadata(repo_root, model, metrics_content)

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))  # same file system: the final move is a rename
    try:
        root = staging / name
        _write_sources(root, repo_root, model, metadata, overridden=bool(overrides) or model.thresholds is not None)
        metadata_check = validate_metadata(root / "configs" / "metadata.json", schema,
                                           search=local_schema_copies(repo_root), download=download_schema)
        model_files, agreement = _export_and_compare(root, model, onnx or int8 is not None)
        int8_report = None
        if int8 is not None:
            int8_report = _export_int8(root, model, int8, dataset)
            model_files.append("models/model_int8.onnx")
        _write_docs(root, name, repo_root, model, metadata, metrics_content, dataset, model_files,
                    data_license_file)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        shutil.move(str(root), str(bundle_dir))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # written last: its file:// URLs point at the final place of the files
    (bundle_dir / "large_files.yml").write_text(large_files_yaml(bundle_dir, model_files, url_base))
    zip_path = write_zip(bundle_dir, out / f"{name}_v{metadata['version']}.zip") if zip_bundle else None
    files = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file())
    return ExportResult(bundle_dir=bundle_dir, zip_path=zip_path, agreement=agreement, files=files,
                        metadata_check=metadata_check, thresholds=model.thresholds,
                        int8=int8_report)
