"""Synthetic chest radiograph phantoms: the bundle's embedded default data.

Real chest X-rays cannot ship with a bundle, so the default training job runs on
phantoms drawn by this module. They are built to make the two questions this
bundle studies matter:

* **distillation** needs a task a small network finds hard and a deep one less so:
  findings differ in size, contrast and shape, several may co-occur, and they sit
  on anatomy (ribs, vessels, heart, diaphragm) that hides them;
* **low resolution** needs findings that vanish when downsampled: a nodule is a
  few pixels wide at 224 px and is swamped by the structured lung texture at
  28 px (``tests/test_phantoms.py`` checks its contrast-to-noise ratio at both).

Geometry is in normalised coordinates (fractions of the image side), so the same
seed gives the same patient at any ``image_size``; only the per-pixel quantum
noise is resolution dependent, as in a real detector. Brightness follows the
radiograph convention: bone and soft tissue bright, air in the lungs dark.

Findings (canonical names from :mod:`bundle.data.vocabulary`), each with its
bounding box kept for saliency evaluation:

=================  ==========================================================
Nodule             small round opacity in a lung, radius 1.0-1.6 % of the side
Consolidation      irregular, larger opacity in a lung (air-space disease)
Pleural Effusion   fluid filling the base of one lung, concave meniscus
Cardiomegaly       heart wider than half the thorax (cardiothoracic ratio > 0.55)
Pneumothorax       lateral crescent of one lung without lung markings, with a
                   thin visible pleural line
=================  ==========================================================

Targets: a multi-label vector over these findings and a multi-class
normal/abnormal label (abnormal = any finding).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from ..console import progress
from .datalist import Datalist
from .vocabulary import SYNTHETIC_FINDINGS

__all__ = ["PhantomSpec", "render_phantom", "make_phantom_datalist", "GENERATOR_VERSION"]

# bump when the drawing changes, so caches written by an older generator are not reused
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class PhantomSpec:
    """Knobs of the generator. The defaults are the bundle's default data set."""

    image_size: int = 256
    # independent prevalence of each finding; P(normal) = prod(1 - p)
    prevalence: dict[str, float] = field(
        default_factory=lambda: {
            "Nodule": 0.3,
            "Consolidation": 0.25,
            "Pleural Effusion": 0.25,
            "Cardiomegaly": 0.25,
            "Pneumothorax": 0.2,
        }
    )
    quantum_noise: tuple[float, float] = (0.01, 0.025)  # per-pixel white noise std range
    texture_strength: float = 0.035  # std of the lung texture (vessels, overlapping tissue)
    nodule_contrast: tuple[float, float] = (0.15, 0.25)
    nodule_radius: tuple[float, float] = (0.010, 0.016)  # fraction of the image side


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _soft(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur a binary mask so that organ edges look like projections, not cut-outs."""
    return gaussian_filter(mask.astype(np.float64), sigma_px) if sigma_px > 0 else mask.astype(np.float64)


def _box(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def _textured_noise(rng: np.random.Generator, size: int, scales: tuple[float, ...]) -> np.ndarray:
    """Unit-variance noise correlated over the given scales (fractions of the side)."""
    total = np.zeros((size, size))
    for scale in scales:
        layer = gaussian_filter(rng.standard_normal((size, size)), max(scale * size, 0.5))
        total += layer / (layer.std() + 1e-12)
    return total / np.sqrt(len(scales))


def render_phantom(
    rng: np.random.Generator, findings: set[str] | frozenset[str], spec: PhantomSpec | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one radiograph with the given findings.

    Args:
        rng: the random generator; all randomness (anatomy, exposure, finding
            placement) comes from it, so a seeded generator gives the same image.
        findings: subset of :data:`SYNTHETIC_FINDINGS` to draw.
        spec: generator settings (image size, contrasts, noise).

    Returns:
        ``(image, boxes)``: float32 ``(H, W)`` in [0, 1], and one
        ``{"label": name, "box": [x_min, y_min, x_max, y_max]}`` per finding, in pixels.
    """
    spec = spec or PhantomSpec()
    unknown = set(findings) - set(SYNTHETIC_FINDINGS)
    if unknown:
        raise ValueError(f"unknown phantom findings {sorted(unknown)}; known: {list(SYNTHETIC_FINDINGS)}")
    n = spec.image_size
    px = 1.0 / n
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) * px + px / 2

    # patient: position, size and habitus vary
    shift_x, shift_y = rng.uniform(-0.03, 0.03, size=2)
    body_w = rng.uniform(0.36, 0.44)
    cx, cy = 0.5 + shift_x, 0.52 + shift_y
    lung_ry, lung_rx = rng.uniform(0.25, 0.29), body_w * rng.uniform(0.36, 0.42)
    lung_dx = body_w * rng.uniform(0.47, 0.53)
    lung_cy = cy - rng.uniform(0.04, 0.07)
    diaphragm_y = lung_cy + lung_ry * rng.uniform(0.72, 0.85)

    body = _ellipse(yy, xx, cy + 0.05, cx, 0.55, body_w)
    image = 0.12 + 0.42 * _soft(body, 3 * px * n)

    # lungs: dark, cut at the bottom by the domes of the diaphragm
    lungs = []
    for side in (-1, 1):  # -1: image left (patient's right), 1: image right (patient's left)
        dome = diaphragm_y - 0.05 * np.cos(np.clip((xx - (cx + side * lung_dx)) / lung_rx, -1, 1) * np.pi / 2)
        lung = _ellipse(yy, xx, lung_cy, cx + side * lung_dx, lung_ry, lung_rx) & (yy < dome)
        lungs.append(lung)
    lung_any = lungs[0] | lungs[1]

    # heart: bright, over the lower medial part of the patient's left lung
    thorax_width = 2 * (lung_dx + lung_rx)
    cardiomegaly = "Cardiomegaly" in findings
    ctr = rng.uniform(0.58, 0.68) if cardiomegaly else rng.uniform(0.38, 0.47)  # cardiothoracic ratio
    heart_rx = ctr * thorax_width / 2
    heart_cx = cx + 0.25 * heart_rx
    heart_cy = diaphragm_y - rng.uniform(0.07, 0.09)
    heart = _ellipse(yy, xx, heart_cy, heart_cx, rng.uniform(0.10, 0.12) * (1 + 0.4 * (ctr - 0.42)), heart_rx)

    lung_field = _soft(lung_any & ~heart, 1.5 * px * n)
    image -= 0.30 * lung_field
    image += 0.10 * _soft(heart, 1.5 * px * n) * (lung_any | body)

    # lung markings: vessels and overlapping soft tissue, structured at the scale of a nodule
    texture = _textured_noise(rng, n, (0.006, 0.012, 0.03))
    texture_weight = lung_field.copy()

    # ribs: curved bright bands over each hemithorax
    ribs = np.zeros_like(image)
    phase = rng.uniform(0, 2 * np.pi)
    for side in (-1, 1):
        lx = (xx - cx) * side  # distance from the midline, positive outwards
        curve = yy - 0.08 * np.clip(lx / (lung_dx + lung_rx), 0, 1.2) ** 2
        band = 0.5 + 0.5 * np.cos(2 * np.pi * curve / rng.uniform(0.068, 0.078) + phase)
        ribs += (band**6) * (lx > 0.01) * body
    image += 0.07 * _soft(ribs > 0.35, 0.8 * px * n) * body

    # spine: bright vertical column behind the mediastinum
    spine = (np.abs(xx - cx) < rng.uniform(0.035, 0.045)) & body
    image += 0.22 * _soft(spine, 1.5 * px * n)

    boxes: list[dict[str, Any]] = []
    lesion = np.zeros_like(image)

    def place_in_lung(radius: float) -> tuple[int, float, float]:
        side = int(rng.integers(0, 2))
        ys, xs = np.nonzero(lungs[side] & ~heart)
        for _ in range(50):
            i = int(rng.integers(0, len(ys)))
            py, pxx = ys[i] * px, xs[i] * px
            inside = _ellipse(yy, xx, py, pxx, radius, radius)
            if (inside & lungs[side]).sum() >= 0.9 * inside.sum():
                return side, py, pxx
        return side, py, pxx

    if "Nodule" in findings:
        radius = rng.uniform(*spec.nodule_radius)
        _, ny, nx = place_in_lung(radius)
        nodule = _ellipse(yy, xx, ny, nx, radius, radius)
        if not nodule.any():  # sub-pixel at tiny sizes: still one pixel in the mask
            nodule[min(int(ny * n), n - 1), min(int(nx * n), n - 1)] = True
        lesion += rng.uniform(*spec.nodule_contrast) * _soft(nodule, 0.3 * radius * n)
        boxes.append({"label": "Nodule", "box": _box(nodule)})

    if "Consolidation" in findings:
        radius = rng.uniform(0.05, 0.09)
        side, ky, kx = place_in_lung(radius * 0.6)
        blob = np.zeros_like(image)
        for _ in range(4):
            oy, ox = rng.normal(0, radius / 2, size=2)
            blob += np.exp(-(((yy - ky - oy) ** 2 + (xx - kx - ox) ** 2) / (2 * (radius / 2) ** 2)))
        region = (blob > 0.6) & lungs[side]
        patchy = np.clip(blob, 0, 1.5) * (0.8 + 0.4 * texture.clip(-1, 1))  # air bronchograms: not uniform
        lesion += rng.uniform(0.14, 0.22) * patchy * lungs[side]
        boxes.append({"label": "Consolidation", "box": _box(region if region.any() else blob > 0.3)})

    if "Pleural Effusion" in findings:
        side = int(rng.integers(0, 2))
        lung_x = cx + (2 * side - 1) * lung_dx
        level = diaphragm_y - rng.uniform(0.08, 0.16)
        # concave meniscus: fluid climbs along the lateral chest wall
        meniscus = level - 0.06 * (np.abs(xx - lung_x) / lung_rx) ** 2 * ((xx - lung_x) * (2 * side - 1) > 0)
        fluid = lungs[side] & (yy > meniscus)
        lesion += 0.24 * _soft(fluid, 1.0 * px * n)
        texture_weight *= 1 - _soft(fluid, 1.0 * px * n)  # fluid hides the lung markings
        boxes.append({"label": "Pleural Effusion", "box": _box(fluid)})

    if cardiomegaly:
        boxes.append({"label": "Cardiomegaly", "box": _box(heart)})

    if "Pneumothorax" in findings:
        side = int(rng.integers(0, 2))
        lung_x = cx + (2 * side - 1) * lung_dx
        depth = rng.uniform(0.25, 0.4) * lung_rx
        inner = _ellipse(yy, xx, lung_cy + 0.02, lung_x - (2 * side - 1) * depth / 2, lung_ry - 0.02, lung_rx - depth)
        air = lungs[side] & ~inner & (yy < lung_cy + 0.5 * lung_ry)
        soft_air = _soft(air, 0.8 * px * n)
        lesion -= 0.08 * soft_air
        texture_weight *= 1 - soft_air  # collapsed lung: no markings in the air crescent
        edge = _soft(air, 0.6 * px * n)
        pleural_line = (edge > 0.25) & (edge < 0.5) & inner
        lesion += 0.08 * pleural_line
        boxes.append({"label": "Pneumothorax", "box": _box(air)})

    image += spec.texture_strength * texture * texture_weight + lesion
    image = np.clip(image, 0, 1)

    # acquisition: exposure (gamma, gain, offset) and quantum noise
    gamma = rng.uniform(0.8, 1.25)
    image = rng.uniform(0.85, 1.1) * image**gamma + rng.uniform(-0.04, 0.04)
    image += rng.normal(0, rng.uniform(*spec.quantum_noise), size=image.shape)
    return np.clip(image, 0, 1).astype(np.float32), boxes


def _sample_findings(rng: np.random.Generator, spec: PhantomSpec) -> frozenset[str]:
    return frozenset(name for name in SYNTHETIC_FINDINGS if rng.random() < spec.prevalence.get(name, 0.0))


def _cache_key(num_images: int, seed: int, spec: PhantomSpec) -> str:
    blob = json.dumps({"v": GENERATOR_VERSION, "n": num_images, "seed": seed, "spec": asdict(spec)}, sort_keys=True)
    return f"{spec.image_size}px_n{num_images}_seed{seed}_{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def _record(image: Any, findings: frozenset[str], boxes: list[dict[str, Any]], index: int) -> dict[str, Any]:
    label = [1.0 if name in findings else 0.0 for name in SYNTHETIC_FINDINGS]
    return {
        "image": image,
        "label": label,
        "label_mask": [1.0] * len(label),
        "abnormal": float(any(label)),
        "patient_id": f"phantom-{index:06d}",
        "view": "PA",
        "boxes": boxes,
    }


def _write_replacing(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file of this process, then rename: processes generating the
    same cache at once (the ranks of a multi-GPU run) never read a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def make_phantom_datalist(
    num_images: int = 1000,
    image_size: int = 256,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    spec: PhantomSpec | None = None,
) -> Datalist:
    """Generate (or reuse) a seeded set of phantoms as a multi-label :class:`Datalist`.

    Args:
        num_images: how many radiographs.
        image_size: side in pixels (images are square).
        seed: the same seed gives the same data set, image for image.
        cache_dir: if given, images are written there once as 16-bit PNGs
            (``<cache_dir>/<key>/images/*.png`` plus ``datalist.json``) and reused by
            later runs with the same arguments; if None, images stay in memory.
        spec: generator settings; ``spec.image_size`` is replaced by ``image_size``.

    Each image ``i`` is drawn from its own generator seeded by ``(seed, i)``, so the
    first ``k`` images do not depend on ``num_images``. Generating shows a progress bar on a
    terminal (:func:`bundle.console.progress`; about 50 s for the default 1,200 at 256 px).
    """
    spec = PhantomSpec(**{**asdict(spec or PhantomSpec()), "image_size": image_size})
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / _cache_key(num_images, seed, spec)
        manifest = folder / "datalist.json"
        if manifest.is_file():
            records = json.loads(manifest.read_text())
            for record in records:
                record["image"] = str(folder / record["image"])
            return Datalist(records, list(SYNTHETIC_FINDINGS), "multilabel")
        (folder / "images").mkdir(parents=True, exist_ok=True)

    records = []
    for index in progress(range(num_images), f"generating {num_images} phantoms", unit="image"):
        rng = np.random.default_rng([seed, index])
        findings = _sample_findings(rng, spec)
        image, boxes = render_phantom(rng, findings, spec)
        if folder is None:
            records.append(_record(image, findings, boxes, index))
            continue
        name = f"images/{index:06d}.png"
        _write_replacing(folder / name, lambda path: Image.fromarray(np.round(image * 65535).astype(np.uint16))
                         .save(path, format="PNG"))
        records.append(_record(name, findings, boxes, index))

    if folder is not None:
        # written last: a run killed mid-generation leaves no manifest, so it regenerates
        _write_replacing(folder / "datalist.json", lambda path: Path(path).write_text(json.dumps(records)))
        for record in records:
            record["image"] = str(folder / record["image"])
    return Datalist(records, list(SYNTHETIC_FINDINGS), "multilabel")
