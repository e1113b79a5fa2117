"""The bundle the deploy app runs: where it lies, and its ``configs/inference.json`` parsed once.

Everything that decides a prediction comes from the bundle's own ``configs/inference.json``
(``network_def``, ``preprocessing``, ``postprocessing``, ``class_names``, ``task``, ``threshold``,
saliency settings), parsed with ``monai.bundle.ConfigParser`` exactly as ``python -m monai.bundle
run`` parses it, so the app cannot drift from the bundle. The checkpoint is read by
:mod:`bundle.checkpoints`, as everywhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoints import load_weights
from bundle.thresholds import class_thresholds

__all__ = ["BundleModel", "load_bundle"]


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
    threshold: list[float]  # multi-label decision threshold of each class (bundle.thresholds)
    device: torch.device
    amp: bool
    require_chest: bool
    saliency_enabled: bool
    saliency_method: str
    saliency_layer: str
    image_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    saliency_writer: Any = None  # one SaliencyWriter per model: its Grad-CAM hooks are placed once
    backend: str = "pytorch"  # what predicts: the PyTorch network, or ONNX Runtime (bundle.runtime)
    predictor: torch.nn.Module | None = None  # the network, or an OnnxRuntimeNetwork; None: the network

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
    # on_error record: the app reads the loader's verdict per file (a refused file is its exit status 2)
    updates: dict[str, Any] = {"bundle_root": str(root), "ckpt_path": str(checkpoint), "on_error": "record"}
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
    from bundle.runtime import inference_network

    backend = str(get("backend")) if "backend" in parser else "pytorch"  # bundles older than 0.8 have no backend
    predictor = inference_network(backend, network, get("onnx_path") if backend != "pytorch" else None,
                                  int(get("onnx_threads") or 0) if "onnx_threads" in parser else 0, torch_device)
    return BundleModel(
        bundle_root=root, checkpoint=checkpoint, network=network, preprocessing=get("preprocessing"),
        postprocessing=get("postprocessing"), class_names=[str(c) for c in get("class_names")], task=get("task"),
        threshold=class_thresholds(get("threshold"), [str(c) for c in get("class_names")]), device=torch_device, amp=bool(get("amp")),
        require_chest=bool(get("require_chest")), saliency_enabled=bool(get("saliency_enabled")),
        saliency_method=get("saliency_method"), saliency_layer=get("saliency_layer"),
        image_size=int(get("image_size")), metadata=metadata, backend=backend, predictor=predictor)
