"""The work of the deploy application, free of the App SDK: find the DICOM, load the bundle, classify, write.

The MONAI Deploy operators in :mod:`bundle.deploy.operators` are thin wrappers around these
functions, so the logic is importable (and testable) without Holoscan, and the app cannot
drift from the bundle: everything that decides a prediction comes from the bundle's own
``configs/inference.json`` (``network_def``, ``preprocessing``, ``postprocessing``,
``class_names``, ``task``, ``threshold``, saliency settings), parsed with
``monai.bundle.ConfigParser`` exactly as ``python -m monai.bundle run`` parses it.

Pixels are read by the bundle's :func:`bundle.data.io.load_cxr` (modality LUT, VOI LUT or
window, MONOCHROME1 inversion, chest / radiograph check), which is what the bundle's
``LoadCXRd`` does for a path; the loaded ``(H, W)`` array then goes through the bundle's
``preprocessing`` (whose ``LoadCXRd`` passes a float image in [0, 1] through unchanged),
so a file gives the same probabilities here as in ``configs/inference.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bundle.checkpoints import load_weights
from bundle.data.errors import CXRDataError
from bundle.data.io import image_format, list_folder, load_cxr, path_problem, read_dicom_header
from bundle.export import file_sha256

__all__ = [
    "NOT_FOR_DIAGNOSTIC_USE",
    "BundleModel",
    "ChestRadiograph",
    "Classification",
    "classify",
    "InputScan",
    "find_input_dicom",
    "load_bundle",
    "read_chest_radiograph",
    "scan_input",
    "write_classification_json",
    "write_saliency",
]

NOT_FOR_DIAGNOSTIC_USE = (
    "NOT FOR DIAGNOSTIC USE. Research output of an automated classifier (cxr-distill); "
    "not a medical device, not reviewed by a physician; do not use for clinical decisions."
)
"""The statement that goes into every output (JSON, Structured Report)."""

_IMAGE_STORAGE_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# ----------------------------------------------------------------------------------------------
# input


@dataclass
class InputScan:
    """The DICOM image a run classifies, and every other file of the input folder with why it was not used."""

    image: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def scan_input(source: str | os.PathLike) -> InputScan:
    """The one DICOM image file to classify: ``source`` itself, or the only DICOM image under the folder.

    A folder is searched recursively (:func:`bundle.data.io.list_folder`; DICOM recognised by
    content, with or without preamble, any file name). Every other file is returned in
    ``skipped`` with its reason: not DICOM, a DICOM without pixel data (a DICOMDIR, a Structured
    Report such as this app's own output), unreadable, a named pipe, socket or device (never
    opened), a dangling link. The app classifies one radiograph per run, so a folder holding
    several DICOM images is refused (naming them) rather than guessed at.

    Raises:
        CXRDataError: naming the file or folder: missing, not DICOM, no pixel data, or a
            folder with no / several DICOM images (the first skipped files with their reasons).
    """
    path = Path(source).expanduser()
    if not path.exists() and not path.is_symlink():
        raise CXRDataError(path, "input file or folder does not exist")
    if not path.is_dir():
        problem = path_problem(path)
        if problem is not None:
            raise CXRDataError(path, problem)
        if image_format(path) != "dicom":
            raise CXRDataError(path, "not a DICOM file")
        header = read_dicom_header(path)
        if "SOPClassUID" not in header:
            raise CXRDataError(path, "not a DICOM file")
        _require_pixel_data(path)
        return InputScan(path)
    entries, hidden = list_folder(path)
    images, skipped = [], []
    for entry in entries:
        reason = _why_not_a_dicom_image(entry)
        if reason is None:
            images.append(entry)
        else:
            skipped.append((entry, reason))
    if not images:
        listing = "; ".join(f"{p}: {why}" for p, why in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        what = f" ({len(skipped)} other file(s): {listing})" if skipped else " (the folder holds no files)"
        if hidden and not skipped:
            what = f" (only {len(hidden)} hidden entr{'y' if len(hidden) == 1 else 'ies'})"
        raise CXRDataError(path, f"no DICOM image found in the folder{what}")
    if len(images) > 1:
        listing = ", ".join(str(p) for p in images[:10])
        raise CXRDataError(path, f"{len(images)} DICOM images in the folder; this app classifies one radiograph "
                                 f"per run: pass one file ({listing})")
    return InputScan(images[0], skipped)


def find_input_dicom(source: str | os.PathLike) -> Path:
    """The DICOM image :func:`scan_input` finds (a file, or the only DICOM image of a folder)."""
    return scan_input(source).image


def _why_not_a_dicom_image(path: Path) -> str | None:
    """None for a DICOM file with pixel data; else why it is not one (nothing is opened that could block)."""
    problem = path_problem(path)
    if problem is not None:
        return problem
    try:
        kind = image_format(path)
        if kind != "dicom":
            return f"not DICOM (a {_FORMAT_NAMES.get(kind, kind)} file): this app reads DICOM"
        read_dicom_header(path)  # content check: a '.dcm' name alone does not make a DICOM file
        if not _has_pixel_data(path):
            return "DICOM without pixel data (e.g. a report, a DICOMDIR or a header-only file)"
    except CXRDataError as error:
        return error.problem
    return None


_FORMAT_NAMES = {"pillow": "PNG/JPEG/BMP/TIFF", "nifti": "NIfTI", "itk": "MHA/NRRD"}


def _has_pixel_data(path: Path) -> bool:
    """Whether the DICOM file holds an image; large values are deferred, so pixels are not read."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, defer_size=1024, force=True)
    except Exception as exc:
        raise CXRDataError(path, f"cannot read DICOM file: {exc}") from exc
    return any(tag in dataset for tag in _IMAGE_STORAGE_ELEMENTS)


def _require_pixel_data(path: Path) -> None:
    if not _has_pixel_data(path):
        raise CXRDataError(path, "no pixel data (a DICOM header without an image, e.g. a report or a header-only file)")


@dataclass
class ChestRadiograph:
    """One loaded radiograph: the file, its DICOM header (no pixels) and the display image in [0, 1]."""

    path: Path
    header: Any  # pydicom.Dataset without pixel data
    image: np.ndarray  # (H, W) float32 in [0, 1], bone bright
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)  # other files of the input folder, and why

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.get("SOPInstanceUID", ""))

    @property
    def study_instance_uid(self) -> str:
        return str(self.header.get("StudyInstanceUID", ""))

    @property
    def series_instance_uid(self) -> str:
        return str(self.header.get("SeriesInstanceUID", ""))


def read_chest_radiograph(path: str | os.PathLike, require_chest: bool = True) -> ChestRadiograph:
    """Read a CR/DX DICOM with the bundle's loader (VOI LUT, MONOCHROME1, chest check).

    Raises:
        CXRDataError: naming the file (not DICOM, no pixel data, not a chest radiograph, ...).
    """
    path = Path(path)
    header = read_dicom_header(path)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not header.get(keyword):
            raise CXRDataError(path, f"DICOM file has no {keyword}; cannot reference it in the report")
    image = load_cxr(path, require_chest=require_chest)
    return ChestRadiograph(path=path, header=header, image=image)


# ----------------------------------------------------------------------------------------------
# the bundle


@dataclass
class BundleModel:
    """The parts of the bundle's ``configs/inference.json`` the app needs, parsed once."""

    bundle_root: Path
    checkpoint: Path
    network: torch.nn.Module
    preprocessing: Any
    postprocessing: Any
    class_names: list[str]
    task: str
    threshold: float
    device: torch.device
    amp: bool
    require_chest: bool
    saliency_enabled: bool
    saliency_method: str
    saliency_layer: str
    image_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    saliency_writer: Any = None  # one SaliencyWriter per model: its Grad-CAM hooks are placed once

    def __post_init__(self) -> None:
        if self.saliency_enabled and self.saliency_writer is None:
            from bundle.handlers import SaliencyWriter

            self.saliency_writer = SaliencyWriter(
                network=self.network, target_layer=self.saliency_layer, output_dir=".", class_names=self.class_names,
                task=self.task, method=self.saliency_method, threshold=self.threshold)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "cxr-distill")

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", ""))

    @property
    def network_name(self) -> str:
        return type(self.network).__name__


def _repository_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _resolve_model(model: str | os.PathLike) -> tuple[Path, Path]:
    """(bundle root, checkpoint) for a bundle folder, a ``models`` folder, or a ``.pt`` file."""
    path = Path(model).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: model path does not exist")
    if path.is_dir():
        for root, checkpoint in ((path, path / "models" / "model.pt"), (path.parent, path / "model.pt")):
            if checkpoint.is_file() and (root / "configs" / "inference.json").is_file():
                return root, checkpoint
        if (path / "model.pt").is_file():  # a bare folder with the checkpoint
            return _bundle_root_for(path / "model.pt"), path / "model.pt"
        nested = sorted(path.glob("*/model.pt"))  # a MAP's /opt/holoscan/models/<model name>/model.pt
        if len(nested) == 1:
            return _bundle_root_for(nested[0]), nested[0]
        if len(nested) > 1:
            raise FileNotFoundError(f"{path}: several models ({', '.join(map(str, nested))}); pass one")
        raise FileNotFoundError(f"{path}: no models/model.pt with configs/inference.json (a bundle folder), "
                                f"nor a model.pt")
    return _bundle_root_for(path), path


def _bundle_root_for(checkpoint: Path) -> Path:
    """The bundle a bare checkpoint belongs to: ``<root>/models/model.pt``, else this package's bundle."""
    for root in (checkpoint.parent.parent, _repository_root(), Path.cwd()):
        if (root / "configs" / "inference.json").is_file():
            return root
    raise FileNotFoundError(f"{checkpoint}: cannot find the bundle's configs/inference.json for this checkpoint "
                            f"(pass the bundle folder as --model)")


def load_bundle(model: str | os.PathLike, device: str | torch.device | None = None,
                overrides: Mapping[str, Any] | None = None) -> BundleModel:
    """Parse the bundle's ``configs/inference.json`` (+ ``metadata.json``) and load the checkpoint.

    Args:
        model: a bundle folder (``configs/`` + ``models/model.pt``), a folder holding
            ``model.pt``, or a ``.pt`` state dict (its bundle is ``<file>/../..`` when that is a
            bundle, else the bundle this package ships with).
        device: overrides the config's ``device`` (``cuda`` when available, else ``cpu``).
        overrides: other config ids to override (e.g. ``{"image_size": 64}``), as
            ``monai.bundle run --id value`` does.
    """
    from monai.bundle import ConfigParser

    root, checkpoint = _resolve_model(model)
    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    metadata_file = root / "configs" / "metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    parser.read_meta(metadata)
    updates: dict[str, Any] = {"bundle_root": str(root), "ckpt_path": str(checkpoint)}
    if device is not None:
        updates["device"] = f"$torch.device({str(device)!r})"
    updates.update(overrides or {})
    parser.update(updates)

    def get(key: str) -> Any:
        return parser.get_parsed_content(key, instantiate=True)

    torch_device = torch.device(get("device"))
    network = get("network_def").to(torch_device)
    load_weights(network, checkpoint, class_names=[str(c) for c in get("class_names")])
    network.eval()
    return BundleModel(
        bundle_root=root, checkpoint=checkpoint, network=network, preprocessing=get("preprocessing"),
        postprocessing=get("postprocessing"), class_names=[str(c) for c in get("class_names")], task=get("task"),
        threshold=float(get("threshold")), device=torch_device, amp=bool(get("amp")),
        require_chest=bool(get("require_chest")), saliency_enabled=bool(get("saliency_enabled")),
        saliency_method=get("saliency_method"), saliency_layer=get("saliency_layer"),
        image_size=int(get("image_size")), metadata=metadata)


# ----------------------------------------------------------------------------------------------
# classification


@dataclass
class Classification:
    """The classifier's answer for one radiograph."""

    radiograph: ChestRadiograph
    probabilities: dict[str, float]
    positive: list[str]
    network_input: torch.Tensor  # (1, S, S), what the network saw (for saliency)
    saliency_files: dict[str, list[str]] = field(default_factory=dict)
    saliency_maps: dict[int, torch.Tensor] | None = None  # Grad-CAM maps made with the prediction


def classify(model: BundleModel, radiograph: ChestRadiograph) -> Classification:
    """Probabilities for one radiograph, computed as ``configs/inference.json``'s evaluator does.

    Bundle preprocessing on ``{"image": array}``, the network, then the bundle's
    postprocessing (sigmoid or softmax) on ``{"pred": logits}``. Findings are "positive" at
    ``probability >= threshold`` (multi-label) or the arg-max class (multi-class), as the
    bundle's ``PredictionWriter`` decides.
    """
    sample = model.preprocessing({"image": radiograph.image, "filename": str(radiograph.path)})
    if sample.get("error"):  # LoadCXRd(on_error="record") of the config
        raise CXRDataError(radiograph.path, str(sample["error"]))
    image = torch.as_tensor(sample["image"]).float()
    maps = None
    if model.saliency_writer is not None and not (model.amp and model.device.type == "cuda"):
        # one forward pass gives the prediction and the top class's Grad-CAM map (real-time path)
        batch_logits, batch_maps = model.saliency_writer.explain(image[None].to(model.device))
        logits, maps = batch_logits[0], batch_maps[0]
    else:
        with torch.no_grad(), torch.autocast(model.device.type, enabled=model.amp and model.device.type == "cuda"):
            logits = model.network(image[None].to(model.device))[0]
    pred = model.postprocessing({"pred": logits.float()})["pred"]
    values = torch.as_tensor(pred).detach().float().cpu().reshape(-1).tolist()
    if len(values) != len(model.class_names):
        raise ValueError(f"the network gives {len(values)} outputs for {len(model.class_names)} class names")
    probabilities = dict(zip(model.class_names, values))
    if model.task == "multiclass":
        positive = [max(probabilities, key=probabilities.__getitem__)]
    else:
        positive = [name for name, p in probabilities.items() if p >= model.threshold]
    return Classification(radiograph=radiograph, probabilities=probabilities, positive=positive, network_input=image,
                          saliency_maps=maps)


def write_saliency(model: BundleModel, result: Classification, output_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Grad-CAM maps and overlays by the bundle's :class:`~bundle.handlers.SaliencyWriter`.

    The writer is the one ``configs/inference.json`` attaches to its evaluator (built once per
    model), so the maps, the explained classes and the file names are the bundle's. The top
    class's map normally comes from :func:`classify`'s single forward pass; other explained
    classes (multi-label findings above the threshold) cost one more pass each. Files:
    ``<output_dir>/saliency/<file name>_<class>.png`` (overlay) and ``.npy`` (map), at the
    network's input size. Returns ``{class name: [files]}``.
    """
    from bundle.handlers.saliency import output_name

    writer = model.saliency_writer
    if writer is None:
        return {}
    image = result.network_input[None].to(model.device)
    maps = result.saliency_maps
    if maps is None:  # classified without saliency (AMP on a GPU): explain the classes now
        pred = torch.tensor([[result.probabilities[c] for c in model.class_names]])
        maps = writer.explain(image, pred)[1][0]
    name = output_name(str(result.radiograph.path), set())
    written = writer.write([name], image, [maps], output_dir=Path(output_dir) / "saliency")[0]
    files = {model.class_names[k]: [str(path) for path in paths] for k, paths in written.items()}
    result.saliency_files = files
    return files


def classification_record(model: BundleModel, result: Classification, sr_file: str | None = None) -> dict[str, Any]:
    """The content of ``classification.json``."""
    header = result.radiograph.header
    return {
        "disclaimer": NOT_FOR_DIAGNOSTIC_USE,
        "source": {
            "file": str(result.radiograph.path),
            "sop_instance_uid": result.radiograph.sop_instance_uid,
            "sop_class_uid": str(header.get("SOPClassUID", "")),
            "study_instance_uid": result.radiograph.study_instance_uid,
            "series_instance_uid": result.radiograph.series_instance_uid,
            "modality": str(header.get("Modality", "")),
            "body_part_examined": str(header.get("BodyPartExamined", "")),
            "rows": int(result.radiograph.image.shape[0]),
            "columns": int(result.radiograph.image.shape[1]),
        },
        "model": {
            "name": model.name,
            "version": model.version,
            "network": model.network_name,
            "checkpoint": str(model.checkpoint),
            "checkpoint_sha256": file_sha256(model.checkpoint),
            "image_size": model.image_size,
        },
        "task": model.task,
        "threshold": model.threshold,
        "class_names": list(model.class_names),
        "probabilities": dict(result.probabilities),
        "positive_findings": list(result.positive),
        "saliency": {name: files for name, files in result.saliency_files.items()},
        "structured_report": sr_file,
        "skipped_inputs": list(result.radiograph.skipped_inputs),
    }


def write_classification_json(model: BundleModel, result: Classification, output_dir: str | os.PathLike,
                              sr_file: str | None = None) -> Path:
    """Write ``<output_dir>/classification.json`` atomically; returns its path."""
    from bundle.handlers.metrics_writer import write_json_atomic

    path = Path(output_dir) / "classification.json"
    write_json_atomic(path, classification_record(model, result, sr_file))
    return path
