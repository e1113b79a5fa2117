"""MedMNIST v2 ``.npz`` files: PneumoniaMNIST and ChestMNIST, with their official splits."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..datalist import Datalist
from ..errors import CXRDataError
from ..vocabulary import NIH_FINDINGS
from .common import PathLike, Record, existing_file, make_records

__all__ = ["PNEUMONIAMNIST_CLASSES", "read_medmnist"]

PNEUMONIAMNIST_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia")


_MEDMNIST_SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"))
_MEDMNIST_FLAVOURS = {
    "pneumoniamnist": "pneumoniamnist",
    "pneumonia": "pneumoniamnist",
    "chestmnist": "chestmnist",
    "chest": "chestmnist",
}


def read_medmnist(npz_path: PathLike, *, flavour: str | None = None) -> Datalist:
    """Read a MedMNIST v2 ``.npz`` (PneumoniaMNIST or ChestMNIST, any size 28/64/128/224).

    The file holds ``{train,val,test}_images`` (N, H, W) uint8 and ``{train,val,test}_labels``:

    * PneumoniaMNIST: labels (N, 1), 0 = normal, 1 = pneumonia -> multiclass
      ``["Normal", "Pneumonia"]`` (one-hot label vectors);
    * ChestMNIST: labels (N, 14) multi-hot in MedMNIST's order, which is NIH ChestX-ray14's
      -> multilabel over :data:`~bundle.data.vocabulary.NIH_FINDINGS` (canonical names).

    ``flavour`` ("pneumoniamnist" or "chestmnist") is inferred from the file name, else from
    the label shape. Records hold the (H, W) uint8 array itself as ``image`` (in memory).
    MedMNIST has **no patient ids**: ``patient_id`` is ``f"{split}-{index}"``, i.e. one patient
    per image, so a patient-level split is impossible; use the official ``splits``
    ("train", "validation", "test"; MedMNIST's "val" is renamed). ``view`` is "UNKNOWN".
    """
    path = existing_file(npz_path)
    if path.stat().st_size == 0:
        raise CXRDataError(path, "empty file (0 bytes), not a MedMNIST .npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}  # decompresses here: a truncated member fails now
    except Exception as exc:  # EOFError, zipfile.BadZipFile, zlib.error, ValueError (pickled), OSError ...
        damaged = isinstance(exc, (EOFError, zipfile.BadZipFile, zlib.error))
        kind = "truncated or damaged" if damaged else "unreadable"
        raise CXRDataError(
            path, f"cannot be read as a MedMNIST .npz ({kind}: {type(exc).__name__}: {exc})") from exc
    required = [f"{key}_{kind}" for key, _ in _MEDMNIST_SPLITS for kind in ("images", "labels")]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise CXRDataError(path, f"missing key(s) {missing}; found {sorted(arrays)}")

    if _medmnist_flavour(path, arrays["train_labels"], flavour) == "pneumoniamnist":
        width, class_names, task = 1, list(PNEUMONIAMNIST_CLASSES), "multiclass"
    else:
        width, class_names, task = len(NIH_FINDINGS), list(NIH_FINDINGS), "multilabel"
    splits: dict[str, list[Record]] = {}
    for key, split in _MEDMNIST_SPLITS:
        images, labels = arrays[f"{key}_images"], arrays[f"{key}_labels"]
        _check_medmnist_arrays(path, key, images, labels, width)
        one_hot = np.eye(2, dtype=np.float32)[labels[:, 0].astype(int)] if width == 1 else None
        vectors = labels.astype(np.float32) if one_hot is None else one_hot
        n = len(images)
        patients = [f"{split}-{i}" for i in range(n)]
        splits[split] = make_records(list(images), vectors, np.ones_like(vectors), patients, ["UNKNOWN"] * n)
    records = [r for split in splits.values() for r in split]
    return Datalist(records, class_names, task, splits, source=str(path))


def _medmnist_flavour(path: Path, train_labels: np.ndarray, flavour: str | None) -> str:
    if flavour is not None:
        if flavour.lower() not in _MEDMNIST_FLAVOURS:
            raise ValueError(f"flavour must be 'pneumoniamnist' or 'chestmnist', not {flavour!r}")
        return _MEDMNIST_FLAVOURS[flavour.lower()]
    for prefix in ("pneumoniamnist", "chestmnist"):
        if path.name.lower().startswith(prefix):
            return prefix
    width = train_labels.shape[1] if train_labels.ndim == 2 else None
    if width in (1, len(NIH_FINDINGS)):
        return "pneumoniamnist" if width == 1 else "chestmnist"
    raise CXRDataError(path, f"not PneumoniaMNIST nor ChestMNIST: labels of shape {train_labels.shape}")


def _check_medmnist_arrays(path: Path, key: str, images: np.ndarray, labels: np.ndarray, width: int) -> None:
    if images.ndim >= 1 and len(images) == 0:
        split = dict(_MEDMNIST_SPLITS)[key]
        raise CXRDataError(path, f"{key}_images is empty: the {split} split has no images")
    square = images.ndim == 3 and images.shape[1] == images.shape[2]
    if images.dtype != np.uint8 or not square or images.shape[1] not in (28, 64, 128, 224):
        raise CXRDataError(
            path, f"{key}_images must be (N, S, S) uint8, S in 28/64/128/224: {images.shape} {images.dtype}"
        )
    if labels.shape != (len(images), width):
        raise CXRDataError(path, f"{key}_labels has shape {labels.shape}, expected ({len(images)}, {width})")
    bad = np.argwhere((labels != 0) & (labels != 1))
    if len(bad):
        i, j = bad[0]
        raise CXRDataError(
            path,
            f"unknown label value {labels[i, j]} in {key}_labels[{i}, {j}]; allowed: 0, 1 ({len(bad)} bad)",
        )
