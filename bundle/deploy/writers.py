"""What the deploy app writes besides the Structured Report (:mod:`bundle.deploy.sr`): saliency and JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bundle.export import file_sha256

from .classifier import Classification
from .model import BundleModel

__all__ = ["NOT_FOR_DIAGNOSTIC_USE", "classification_record", "write_classification_json", "write_saliency"]

NOT_FOR_DIAGNOSTIC_USE = (
    "NOT FOR DIAGNOSTIC USE. Research output of an automated classifier (cxr-distill); "
    "not a medical device, not reviewed by a physician; do not use for clinical decisions."
)
"""The statement that goes into every output (JSON, Structured Report)."""


def write_saliency(model: BundleModel, result: Classification, output_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Grad-CAM maps and overlays by the bundle's :class:`~bundle.handlers.SaliencyWriter`.

    The writer is the one ``configs/inference.json`` attaches to its evaluator (built once per
    model), so the maps, the explained classes and the file names are the bundle's. The top
    class's map normally comes from :func:`classify`'s single forward pass; other explained
    classes (multi-label findings above the threshold) cost one more pass each. Files:
    ``<output_dir>/saliency/<file name>_<class>.png`` (overlay, on the radiograph at its own
    resolution, with a colour bar, the class and its probability) and ``.npy`` (map, at the
    network's input size). Returns ``{class name: [files]}``.
    """
    from bundle.handlers.saliency import output_name

    writer = model.saliency_writer
    if writer is None:
        return {}
    image = result.network_input[None].to(model.device)
    maps = result.saliency_maps
    probabilities = torch.tensor([[result.probabilities[c] for c in model.class_names]])
    if maps is None:  # classified without saliency (AMP on a GPU): explain the classes now
        maps = writer.explain(image, probabilities)[1][0]
    name = output_name(str(result.radiograph.path), set())
    written = writer.write([name], image, [maps], output_dir=Path(output_dir) / "saliency",
                           originals=[result.radiograph.image], probabilities=probabilities)[0]
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
        "threshold": model.threshold[0] if len(set(model.threshold)) == 1 else None,  # one for every class
        "thresholds": dict(zip(model.class_names, model.threshold)),
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
