"""Helpers shared by the export and MONAI Label tests: a random-init student exported as a bundle, and the
outputs it must give on real images (computed here, in PyTorch, from the bundle's own config and weights)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from bundle.export import DEFAULT_NAME, ExportResult, export_bundle
from bundle.networks import ThreeConvStudent
from conftest import require_shared

CLASSES = ["Nodule", "Consolidation", "Pleural Effusion", "Cardiomegaly", "Pneumothorax"]
NAME = DEFAULT_NAME
PNG = "nih_sample/images/00000001_000.png"
DICOM = "dicom/chest_cr_monochrome1.dcm"


def random_student_checkpoint(path: Path, seed: int = 0) -> Path:
    """Weights of an untrained student, with BatchNorm statistics moved off their defaults (so that the
    exports are compared on a network whose every layer matters)."""
    torch.manual_seed(seed)
    network = ThreeConvStudent(in_channels=1, out_channels=len(CLASSES))
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(torch.rand(4, 1, 64, 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def export_random_student(folder: Path, **options) -> ExportResult:
    schema = require_shared("../monai/meta_schema_20240725.json")
    checkpoint = random_student_checkpoint(folder / "train" / "model.pt")
    return export_bundle(checkpoint, folder / "export", NAME, schema=schema, **options)


def preprocess(bundle_dir: Path, images: list[str | os.PathLike]) -> torch.Tensor:
    """The batch the bundle's network sees for these files (``configs/inference.json#preprocessing``)."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    transform = parser.get_parsed_content("preprocessing")
    return torch.stack([torch.as_tensor(transform({"image": str(i)})["image"]).as_subclass(torch.Tensor)
                        for i in images])


def bundle_network(bundle_dir: Path) -> torch.nn.Module:
    """``network_def`` of the bundle with ``models/model.pt`` loaded, in eval mode."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_dir / "models" / "model.pt", weights_only=True))
    return network.eval()


@torch.no_grad()
def reference_probabilities(bundle_dir: Path, images: list[str | os.PathLike]) -> torch.Tensor:
    return torch.sigmoid(bundle_network(bundle_dir)(preprocess(bundle_dir, images)))
