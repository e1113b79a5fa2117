"""Do explanations point at the findings? Pointing game and box IoU of saliency maps.

For any saliency map (ViT attention, Grad-CAM ...) of shape ``(H, W)`` and boxes
``[x_min, y_min, x_max, y_max]`` in the map's pixel coordinates (``x`` = column, ``y`` = row;
the pixel ``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``, so integer boxes with
exclusive maxima, as :mod:`bundle.data.phantoms` writes them, cover exactly their pixels):

* :func:`pointing_game` (Zhang et al., "Top-down neural attention by excitation backprop",
  ECCV 2016): a hit when the map's maximum lies in a box. The maximum is the first
  ``argmax`` in row-major order; ``tolerance`` (pixels, default 0: the peak pixel itself must
  be inside) counts a peak within that distance of a box as a hit (Zhang et al. use 15 px at
  224 px). Chance level is the fraction of the image the boxes cover (reported as
  ``chance`` by :func:`localization_scores`).
* :func:`box_iou`: the map, min-max scaled to [0, 1], thresholded at ``threshold`` (default
  0.5: the upper half of its range), against the union of the boxes, by intersection over
  union. Why the range and not a fraction of the maximum: attention maps have a floor (every
  patch receives some attention), so "0.5 of the max" marks most of the image whenever the map
  is flat; min-max scaling measures the map's own contrast. CAM (Zhou et al. 2016) boxes use
  20 % of the max; 0.5 of the range is the usual choice in weakly supervised localisation.

A box that holds no pixel centre (a 1 % nodule on a 28 px map is 0.3 px wide) is given the
pixel that holds its centre, so that small findings stay scorable at low resolution.

:func:`localization_scores` averages both over images (the union of an image's boxes: the
map of a ViT does not depend on the class) and per finding (that finding's boxes, over the
images that have it). A CNN's Grad-CAM map is made for one class: :func:`class_localization`
scores, for every finding, the map of that finding's class against that finding's boxes, and
:func:`map_agreement` measures how alike two networks' maps of the same class are (does a
distilled student look where its teacher looks?). :func:`evaluate_saliency` runs a saliency function over records with
boxes (the phantoms' ``boxes``; NIH's ``BBox_List_2017``, :func:`nih_box_records`), scaling
the boxes from the image file's pixels to the map's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "boxes_mask",
    "scale_boxes",
    "pointing_game",
    "box_iou",
    "localization_scores",
    "evaluate_saliency",
    "attention_saliency",
    "cam_saliency",
    "class_localization",
    "map_agreement",
    "nih_box_records",
]

Box = Sequence[float]


def _box_of(item: Box | Mapping[str, Any]) -> Box:
    return item["box"] if isinstance(item, Mapping) else item


def boxes_mask(boxes: Iterable[Box | Mapping[str, Any]], shape: Sequence[int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the union of the boxes (a pixel is in when its centre is)."""
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=bool)
    centres_x, centres_y = np.arange(width) + 0.5, np.arange(height) + 0.5
    for item in boxes:
        x0, y0, x1, y1 = (float(v) for v in _box_of(item))
        cols = (centres_x >= x0) & (centres_x < x1)
        rows = (centres_y >= y0) & (centres_y < y1)
        if cols.any() and rows.any():
            mask[np.ix_(rows, cols)] = True
        else:  # thinner than a pixel: the pixel holding the box's centre
            r = min(max(int((y0 + y1) / 2), 0), height - 1)
            c = min(max(int((x0 + x1) / 2), 0), width - 1)
            mask[r, c] = True
    return mask


def scale_boxes(boxes: Iterable[Mapping[str, Any]], from_shape: Sequence[int], to_shape: Sequence[int]
                ) -> list[dict[str, Any]]:
    """Boxes in pixels of an ``(H0, W0)`` image -> pixels of an ``(H, W)`` map (the same field of view)."""
    sy, sx = to_shape[0] / from_shape[0], to_shape[1] / from_shape[1]
    return [{**dict(b), "box": [b["box"][0] * sx, b["box"][1] * sy, b["box"][2] * sx, b["box"][3] * sy]}
            for b in boxes]


def _as_map(saliency_map: Any) -> np.ndarray:
    array = np.asarray(saliency_map.detach().cpu() if isinstance(saliency_map, torch.Tensor) else saliency_map,
                       dtype=np.float64)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"a saliency map must be H x W, got shape {array.shape}")
    return array


def pointing_game(saliency_map: Any, boxes: Iterable[Box | Mapping[str, Any]], tolerance: float = 0.0) -> bool:
    """True when the map's maximum (first ``argmax``, row-major) is in a box, or within ``tolerance`` px of one."""
    array = _as_map(saliency_map)
    mask = boxes_mask(boxes, array.shape)
    r, c = np.unravel_index(int(np.argmax(array)), array.shape)
    if mask[r, c]:
        return True
    if tolerance <= 0 or not mask.any():
        return False
    rows, cols = np.nonzero(mask)
    return bool(np.min((rows - r) ** 2 + (cols - c) ** 2) <= tolerance**2)


def box_iou(saliency_map: Any, boxes: Iterable[Box | Mapping[str, Any]], threshold: float = 0.5) -> float:
    """IoU of ``{minmax(map) >= threshold}`` with the union of the boxes (0 for a constant map)."""
    array = _as_map(saliency_map)
    low, high = array.min(), array.max()
    region = (array - low) / (high - low) >= threshold if high > low else np.zeros(array.shape, dtype=bool)
    mask = boxes_mask(boxes, array.shape)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def localization_scores(items: Iterable[tuple[Any, Sequence[Mapping[str, Any]]]], threshold: float = 0.5,
                        tolerance: float = 0.0) -> dict[str, Any]:
    """Pointing-game hit rate and mean IoU over ``(map, boxes)`` pairs (boxes in the map's pixels).

    Returns ``{"images", "pointing_game", "iou", "chance", "per_finding": {label: {"images",
    "pointing_game", "iou", "chance"}}}``; ``chance`` is the mean fraction of the map the boxes
    cover (the hit rate of a uniformly random peak). Pairs without boxes are skipped; the
    scores are None when no pair has one.
    """
    hits: list[float] = []
    ious: list[float] = []
    chance: list[float] = []
    per_finding: dict[str, dict[str, list[float]]] = {}
    for saliency_map, boxes in items:
        if not boxes:
            continue
        array = _as_map(saliency_map)
        hits.append(float(pointing_game(array, boxes, tolerance)))
        ious.append(box_iou(array, boxes, threshold))
        chance.append(float(boxes_mask(boxes, array.shape).mean()))
        for label in dict.fromkeys(str(b.get("label", "finding")) for b in boxes):
            own = [b for b in boxes if str(b.get("label", "finding")) == label]
            entry = per_finding.setdefault(label, {"pointing_game": [], "iou": [], "chance": []})
            entry["pointing_game"].append(float(pointing_game(array, own, tolerance)))
            entry["iou"].append(box_iou(array, own, threshold))
            entry["chance"].append(float(boxes_mask(own, array.shape).mean()))
    return {
        "images": len(hits), "pointing_game": _mean(hits), "iou": _mean(ious), "chance": _mean(chance),
        "threshold": threshold, "tolerance": tolerance,
        "per_finding": {label: {"images": len(v["iou"]), **{k: _mean(v[k]) for k in ("pointing_game", "iou", "chance")}}
                        for label, v in sorted(per_finding.items())},
    }


def attention_saliency(network: torch.nn.Module, layers: str | Sequence[int] = "all"
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images (N, 1, H, W) -> maps (N, H, W)``: a ViT's mean attention map at the input size."""
    from .distributed import unwrap

    def saliency(images: torch.Tensor) -> torch.Tensor:
        return unwrap(network).explain(images, layers)[1]

    return saliency


def cam_saliency(network: torch.nn.Module, target_layer: str, method: str = "gradcam"
                 ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``(images (N, 1, H, W), class index) -> maps (N, H, W)``: a CNN's Grad-CAM / Grad-CAM++ at the input size.

    ``monai.visualize``'s CAM, built once (its hooks stay on ``network``), with the backward
    pass stopping at ``target_layer`` (:func:`bundle.handlers.saliency.gradients_from_layer`).
    ``method``: ``"gradcam"`` or ``"gradcampp"``; maps are min-max normalised to [0, 1].
    """
    from .handlers.saliency import gradients_from_layer, make_cam

    cam = make_cam(method, network, target_layer)

    def saliency(images: torch.Tensor, class_idx: int) -> torch.Tensor:
        with torch.enable_grad(), gradients_from_layer(network, target_layer):
            return cam(images, class_idx=class_idx)[:, 0].detach()

    return saliency


def class_localization(
    saliency: Callable[[torch.Tensor, int], torch.Tensor],
    records: Iterable[Mapping[str, Any]],
    image_size: int,
    class_names: Sequence[str],
    **kwargs: Any,
) -> dict[str, Any]:
    """Class-specific maps (Grad-CAM) against their own finding's boxes.

    For every class that has boxes in ``records``, :func:`evaluate_saliency` of that class's
    map over the images with boxes of it, against those boxes only. The overall scores are the
    means over all (image, finding) pairs; ``images`` counts those pairs. ``kwargs`` go to
    :func:`evaluate_saliency` (``device``, ``threshold``, ``tolerance``, ``transform`` ...).
    """
    records = list(records)
    per_finding: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(class_names):
        scores = evaluate_saliency(lambda images, k=index: saliency(images, k), records, image_size,
                                   labels=[name], **kwargs)
        if scores["images"]:
            per_finding[name] = {key: scores[key] for key in ("images", "pointing_game", "iou", "chance")}
    pairs = sum(v["images"] for v in per_finding.values())
    overall = {key: (sum(v[key] * v["images"] for v in per_finding.values()) / pairs if pairs else None)
               for key in ("pointing_game", "iou", "chance")}
    return {"images": pairs, **overall, "threshold": kwargs.get("threshold", 0.5),
            "tolerance": kwargs.get("tolerance", 0.0), "per_finding": per_finding}


def _upper_half(saliency_map: torch.Tensor, threshold: float) -> torch.Tensor:
    low, high = saliency_map.min(), saliency_map.max()
    if high - low <= 0:
        return torch.zeros_like(saliency_map, dtype=torch.bool)
    return (saliency_map - low) / (high - low) >= threshold


def map_agreement(
    saliency_a: Callable[[torch.Tensor, int], torch.Tensor],
    saliency_b: Callable[[torch.Tensor, int], torch.Tensor],
    records: Iterable[Mapping[str, Any]],
    image_size_a: int,
    image_size_b: int,
    class_names: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """How alike two networks' maps of the same class are, on the same images.

    For every record and every finding it has boxes of (the findings the maps should show),
    both networks' maps of that class, each network seeing the image at its own input size;
    both maps are brought to the larger size (bilinear) and compared by

    * ``correlation``: Pearson's r over pixels (0 when either map is flat);
    * ``iou``: IoU of their upper halves (each map min-max scaled, ``>= threshold``, as
      :func:`box_iou` thresholds a map);
    * ``same_peak``: the fraction of pairs whose maxima are within one pixel of the smaller map;
    * ``flat``: the fraction of pairs where either map is constant (all of the above count 0).

    Returns the means over (image, finding) pairs, their count as ``pairs``, and per finding.
    """
    import torch.nn.functional as F

    records = list(records)
    size = max(image_size_a, image_size_b)
    transform_a, transform_b = _default_transform(image_size_a), _default_transform(image_size_b)
    peak_radius = size / min(image_size_a, image_size_b)
    values: dict[str, dict[str, list[float]]] = {}
    for index, name in enumerate(class_names):
        chosen = [r for r in records if any(b.get("label") == name for b in r.get("boxes") or [])]
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start:start + batch_size]
            maps = []
            for saliency, transform in ((saliency_a, transform_a), (saliency_b, transform_b)):
                images = torch.stack([torch.as_tensor(transform({"image": r["image"]})["image"]) for r in batch])
                out = saliency(images.float().to(device), index).detach().float().cpu()[:, None]
                maps.append(F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)[:, 0])
            entry = values.setdefault(name, {"correlation": [], "iou": [], "same_peak": [], "flat": []})
            for a, b in zip(*maps):
                a_flat, b_flat = a.flatten() - a.mean(), b.flatten() - b.mean()
                norm = a_flat.norm() * b_flat.norm()
                # a flat map (Grad-CAM of a class the network ignores is all zeros) agrees with nothing
                entry["flat"].append(float(norm <= 0))
                entry["correlation"].append(float((a_flat @ b_flat) / norm) if norm > 0 else 0.0)
                mask_a, mask_b = _upper_half(a, threshold), _upper_half(b, threshold)
                union = (mask_a | mask_b).sum()
                entry["iou"].append(float((mask_a & mask_b).sum() / union) if union > 0 else 0.0)
                peak_a = divmod(int(a.argmax()), size)
                peak_b = divmod(int(b.argmax()), size)
                distance = max(abs(peak_a[0] - peak_b[0]), abs(peak_a[1] - peak_b[1]))
                entry["same_peak"].append(float(distance <= peak_radius and norm > 0))
    keys = ("correlation", "iou", "same_peak", "flat")
    every = {key: [x for v in values.values() for x in v[key]] for key in keys}
    return {"pairs": len(every["iou"]), **{key: _mean(every[key]) for key in keys}, "threshold": threshold,
            "per_finding": {name: {"pairs": len(v["iou"]), **{key: _mean(v[key]) for key in keys}}
                            for name, v in sorted(values.items())}}


def _default_transform(image_size: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    from monai.transforms import Compose, EnsureTyped, Resized

    from .data.io import LoadCXRd

    return Compose([LoadCXRd(keys="image", require_chest=False),
                    Resized(keys="image", spatial_size=(image_size, image_size), mode="area"),
                    EnsureTyped(keys="image", dtype=torch.float32, track_meta=False)])


def evaluate_saliency(
    saliency: Callable[[torch.Tensor], torch.Tensor],
    records: Iterable[Mapping[str, Any]],
    image_size: int,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    threshold: float = 0.5,
    tolerance: float = 0.0,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`localization_scores` of ``saliency`` over the records that have boxes.

    Args:
        saliency: ``images -> maps`` at the input size (e.g. :func:`attention_saliency`).
        records: ``{"image": path, "boxes": [{"label", "box"}]}`` with boxes in the image
            file's pixels (phantom records, :func:`nih_box_records`).
        image_size: the network's input side; boxes are scaled from each file's size to it.
        transform: image preprocessing (default: load, area-resize to ``image_size``, as
            inference and evaluation do).
        labels: keep only boxes of these findings (None: all).
    """
    from .data.io import load_cxr

    transform = transform or _default_transform(image_size)
    chosen = []
    for record in records:
        boxes = [b for b in record.get("boxes") or [] if labels is None or b.get("label") in labels]
        if boxes:
            chosen.append((record, boxes))
    items: list[tuple[np.ndarray, list[dict[str, Any]]]] = []
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start:start + batch_size]
        images = torch.stack([torch.as_tensor(transform({"image": r["image"]})["image"]) for r, _ in batch])
        maps = saliency(images.float().to(device)).detach().float().cpu().numpy()
        for (record, boxes), saliency_map in zip(batch, maps):
            image = record["image"]
            source = (np.shape(image)[-2:] if not isinstance(image, (str, os.PathLike))
                      else load_cxr(image, require_chest=False).shape)
            items.append((saliency_map, scale_boxes(boxes, source, saliency_map.shape)))
    return localization_scores(items, threshold, tolerance)


def nih_box_records(bbox_csv: str | os.PathLike, image_root: str | os.PathLike) -> list[dict[str, Any]]:
    """NIH ``BBox_List_2017`` boxes of the images found (by file name, anywhere) under ``image_root``.

    Returns ``[{"image": path, "boxes": [{"label", "box"}]}]`` with the boxes in each file's pixels
    (NIH's 1024 px grid scaled to the file's size: :func:`bundle.data.readers.nih_boxes_to_image`);
    an empty list when none of the images there has a box.
    """
    from .data.readers import nih_boxes_to_image, read_nih_boxes

    boxes = read_nih_boxes(bbox_csv)
    root = Path(image_root)
    found = {path.name: path for path in root.rglob("*.png")} if root.is_dir() else {}
    return [{"image": str(found[name]), "boxes": nih_boxes_to_image(boxes[name], found[name])}
            for name in sorted(boxes) if name in found]
