"""One radiograph through the bundle's preprocessing, network and postprocessing.

The loaded ``(H, W)`` image goes through the bundle's ``preprocessing`` (whose ``LoadCXRd`` passes
a float image in [0, 1] through unchanged), so a file gives the same probabilities here as in
``configs/inference.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bundle.data.errors import CXRDataError
from bundle.thresholds import positive_classes

from .dicom_input import ChestRadiograph
from .model import BundleModel

__all__ = ["Classification", "classify"]


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
    ``probability >= its class's threshold`` (multi-label: the bundle's ``threshold``, per class) or the arg-max class (multi-class), as the
    bundle's ``PredictionWriter`` decides.
    """
    sample = model.preprocessing({"image": radiograph.image, "filename": str(radiograph.path)})
    if sample.get("error"):  # LoadCXRd(on_error="record") of the config
        raise CXRDataError(radiograph.path, str(sample["error"]))
    image = torch.as_tensor(sample["image"]).float()
    maps = None
    if model.backend != "pytorch" and model.predictor is not None:
        if model.saliency_writer is not None:
            # ONNX Runtime predicts and gives the saliency layer's activations; Grad-CAM's gradient comes from the
            # PyTorch tail after that layer (or the whole network where there is none: bundle.runtime)
            batch_logits, batch_maps = model.saliency_writer.explain_onnx(model.predictor, image[None].to(model.device))
            logits, maps = batch_logits[0], batch_maps[0]
        else:
            with torch.no_grad():
                logits = model.predictor(image[None].to(model.device))[0]
    elif model.saliency_writer is not None and not (model.amp and model.device.type == "cuda"):
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
        positive = positive_classes(values, model.class_names, model.threshold)
    return Classification(radiograph=radiograph, probabilities=probabilities, positive=positive, network_input=image,
                          saliency_maps=maps)
