"""Readers of real chest X-ray data sets; each returns a :class:`~bundle.data.datalist.Datalist`.

One function per format; they share the CSV loading / validation helpers at the bottom of
this module, so that every data set reports problems the same way: a
:class:`~bundle.data.errors.CXRDataError` that names the file and the problem (missing
columns are listed; an unknown label value is given with its column and row; duplicate rows
are counted, with an example; missing images are counted, with the first few).

Row numbers in messages count data rows from 1 (the header is not a row); the message also
gives the line of the file (line = row + 1).

All readers accept ``.csv`` and compressed ``.csv.gz`` files (pandas infers the compression).
Image paths are made absolute by joining them with ``image_root``, which defaults to the
folder of the label file. With ``check_files=True`` (the default) every image is checked to
exist and *all* missing images are reported in one error; ``missing="keep"`` keeps their
records instead (at the path where the image was expected), so that the data-set check
(:mod:`bundle.data.check`, which :func:`bundle.data.load_splits` users run) reports them
together with every other problem and ``skip_bad_records`` can leave them out;
``check_files=False`` does not touch the image folder (use it to parse label files without
their images). A label file with no data rows is an error.

**Paths stay inside the data folder.** An image path that leaves ``image_root`` (``../..``, or an
absolute path elsewhere) is refused, naming the rows, unless ``allow_outside_paths=True``
(dataset option ``allow_outside_paths``) or ``image_root`` names a folder that holds them all.
The check is on the written path (``..`` resolved, symbolic links inside the folder followed as
usual), before any file is touched.

=================  ==========  ===============================================================
reader             task        label vector
=================  ==========  ===============================================================
read_medmnist      both        PneumoniaMNIST: [Normal, Pneumonia]; ChestMNIST: NIH's 14
read_chexpert      multilabel  CheXpert's 14 observations (uncertainty and blank policies)
read_nih           multilabel  NIH's 14 findings (no "No Finding" output, see there)
read_vindr         multilabel  VinDr-CXR's 14 findings + "No Finding" (radiologists' vote)
read_csv_datalist  both        0/1 label columns, or one class-name column
read_image_folder  multiclass  one class per sub-folder (sorted names)
read_cxr3          multiclass  [Normal, Pneumonia, COVID-19]
read_padchest      multilabel  PadChest report terms -> 17 findings + "No Finding"
=================  ==========  ===============================================================
"""

from __future__ import annotations

import ast
import gc
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .datalist import VIEWS, Datalist
from .errors import CXRDataError
from .io import list_folder, path_problem
from .vocabulary import (
    CHEXPERT_FINDINGS,
    NIH_FINDINGS,
    PADCHEST_FINDINGS,
    PADCHEST_TERMS,
    VINDR_FINDINGS,
    canonical_finding,
)

__all__ = [
    "CXR3_CLASSES",
    "KERMANY_PATIENT_PATTERN",
    "PADCHEST_PROJECTIONS",
    "PNEUMONIAMNIST_CLASSES",
    "normalise_view",
    "read_chexpert",
    "read_csv_datalist",
    "read_cxr3",
    "read_image_folder",
    "read_medmnist",
    "read_nih",
    "read_nih_boxes",
    "nih_boxes_to_image",
    "image_file_size",
    "read_padchest",
    "read_vindr",
]

PathLike = str | os.PathLike
Record = dict[str, Any]
PNEUMONIAMNIST_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia")
CXR3_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia", "COVID-19")
#: Patient id in Kermany et al.'s file names: "person1_bacteria_1.jpeg" -> "person1",
#: "IM-0115-0001.jpeg" -> "IM-0115", "NORMAL2-IM-1427-0001.jpeg" -> "NORMAL2-IM-1427".
KERMANY_PATIENT_PATTERN = r"^(?P<patient>person\d+|(?:NORMAL\d*-)?IM-\d+)(?=[_-])"
_MAX_LISTED = 5  # how many examples an error message lists
NIH_BOX_GRID = 1024  # BBox_List_2017.csv's coordinates are pixels of NIH's 1024 x 1024 release
Missing = Literal["raise", "keep"]


# ----------------------------------------------------------------------------------------- MedMNIST

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
    path = _existing_file(npz_path)
    if path.stat().st_size == 0:
        raise CXRDataError(path, "empty file (0 bytes), not a MedMNIST .npz")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}  # decompresses here: a truncated member fails now
    except Exception as exc:  # EOFError, zipfile.BadZipFile, zlib.error, ValueError (pickled), OSError ...
        kind = "truncated or damaged" if isinstance(exc, (EOFError, zipfile.BadZipFile, zlib.error)) else "unreadable"
        raise CXRDataError(path, f"cannot be read as a MedMNIST .npz ({kind}: {type(exc).__name__}: {exc})") from exc
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
        splits[split] = _make_records(list(images), vectors, np.ones_like(vectors), patients, ["UNKNOWN"] * n)
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


# ----------------------------------------------------------------------------------------- CheXpert

_CHEXPERT_PREFIX = r"^CheXpert-v1\.0(?:-small)?/"
#: The columns the "No Finding" rule applies to: the pathologies ("Support Devices" is not one).
_CHEXPERT_PATHOLOGIES = [c for c in CHEXPERT_FINDINGS if c not in ("No Finding", "Support Devices")]


def read_chexpert(
    csv_path: PathLike,
    image_root: PathLike | None = None,
    *,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertain: Literal["ignore", "zeros", "ones"] = "ignore",
    blank: Literal["unknown", "negative"] = "unknown",
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read CheXpert's ``train.csv`` / ``valid.csv`` (v1.0 or v1.0-small).

    Columns: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 observations of
    :data:`~bundle.data.vocabulary.CHEXPERT_FINDINGS` with values 1.0 (positive),
    0.0 (negative), -1.0 (uncertain) or blank (not mentioned). Any other value is an error.

    * Image path: ``Path`` without its ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` prefix,
      joined with ``image_root`` (default: the csv's folder): ``root/train/patient00001/...``.
    * ``patient_id``: the ``patientNNNNN`` folder of the path.
    * ``view``: Lateral -> "LATERAL"; Frontal -> the ``AP/PA`` value when it is AP, PA or LL,
      otherwise "UNKNOWN" (blank, or the one "RL" of the real train.csv). ``views`` keeps only
      those views (``None`` keeps all). The real train.csv has 17 Frontal rows whose AP/PA is
      LL (16) or RL (1): the default ``("PA", "AP")`` drops them.
    * ``uncertain`` (-1.0): "ignore" -> unknown (mask 0), "zeros" -> negative, "ones" -> positive.
    * ``blank``: "unknown" -> mask 0; "negative" -> known negative (label 0, mask 1).
    * The **"No Finding" rule**, applied after the two policies:

      1. a row with a known positive pathology (any finding but "No Finding" and
         "Support Devices"; an uncertain one counts under "ones") gets "No Finding" = 0, known;
         a positive pathology wins over a contradicting "No Finding" = 1;
      2. a row with "No Finding" = 1 (and no positive pathology) gets every *blank* pathology
         as a known negative, whatever ``blank`` says; an explicit -1.0 keeps its uncertainty
         policy (the real train.csv has none). "Support Devices" is not a pathology and is left
         as it is: 8,808 real rows have "No Finding" = 1 together with "Support Devices" = 1.
    """
    path = _existing_file(csv_path)
    _check_choice("uncertain", uncertain, ("ignore", "zeros", "ones"))
    _check_choice("blank", blank, ("unknown", "negative"))
    wanted_views = None if views is None else _check_views(views)
    df = _read_csv(path, ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS])
    _check_unique(df, ["Path"], path)
    codes = _parse_codes(df, CHEXPERT_FINDINGS, (1.0, 0.0, -1.0), path, "1.0, 0.0, -1.0 or blank")
    kind = _check_values(df["Frontal/Lateral"], ("Frontal", "Lateral"), path, "Frontal/Lateral")
    frontal = (kind == "Frontal").to_numpy(bool)
    ap_pa = df["AP/PA"].fillna("").astype(str).str.strip().str.upper()
    view = np.where(frontal, np.where(ap_pa.isin(["AP", "PA", "LL"]), ap_pa, "UNKNOWN"), "LATERAL")
    rel = df["Path"].astype(str).str.replace(_CHEXPERT_PREFIX, "", regex=True)
    patient = rel.str.extract(r"(?:^|/)(patient\d+)/", expand=False)
    if patient.isna().any():
        i = int(np.flatnonzero(patient.isna())[0])
        raise CXRDataError(path, f"no 'patientNNNNN' folder in Path {df['Path'].iloc[i]!r} at {_row(i)}")

    label, mask = _chexpert_label_and_mask(codes, uncertain, blank)
    keep = np.ones(len(df), bool) if wanted_views is None else np.isin(view, wanted_views)
    if not keep.any():
        raise CXRDataError(path, f"no rows left after the view filter views={list(wanted_views or [])} "
                                 f"(views in the file: {sorted(set(view.tolist()))})")
    root = _root(image_root, path)
    _check_inside(root, rel[keep], path, "Path", allow_outside_paths)
    images = _join(root, rel[keep])
    if check_files:
        _check_files_exist(images, path, root, missing)
    records = _make_records(images, label[keep], mask[keep], patient[keep].tolist(), view[keep].tolist())
    dropped = {}
    if wanted_views and (~keep).any():
        dropped[f"with a view other than {', '.join(wanted_views)}"] = int((~keep).sum())
    return Datalist(records, list(CHEXPERT_FINDINGS), "multilabel", dropped=dropped, source=str(path))


def _chexpert_label_and_mask(codes: np.ndarray, uncertain: str, blank: str) -> tuple[np.ndarray, np.ndarray]:
    """Label and mask (N, 14) from CheXpert codes (1, 0, -1, NaN); see :func:`read_chexpert`."""
    pos, neg, unc, empty = codes == 1, codes == 0, codes == -1, np.isnan(codes)
    label = (pos | (unc & (uncertain == "ones"))).astype(np.float32)
    mask = pos | neg | (unc & (uncertain != "ignore")) | (empty & (blank == "negative"))
    nf = CHEXPERT_FINDINGS.index("No Finding")
    cols = [CHEXPERT_FINDINGS.index(c) for c in _CHEXPERT_PATHOLOGIES]
    any_positive = ((label[:, cols] == 1) & mask[:, cols]).any(axis=1)
    # rule 2: "No Finding" = 1 (and no positive pathology) -> blank pathologies are known negatives
    fill = empty[:, cols] & (pos[:, nf] & ~any_positive)[:, None]
    sub_label, sub_mask = label[:, cols], mask[:, cols]
    sub_label[fill], sub_mask[fill] = 0.0, True
    label[:, cols], mask[:, cols] = sub_label, sub_mask
    # rule 1: a positive pathology -> "No Finding" = 0, known
    label[any_positive, nf], mask[any_positive, nf] = 0.0, True
    return label, mask.astype(np.float32)


# ----------------------------------------------------------------------------------------- NIH


def read_nih(
    data_entry_csv: PathLike,
    image_root: PathLike | None = None,
    *,
    train_val_list: PathLike | None = None,
    test_list: PathLike | None = None,
    bbox_csv: PathLike | None = None,
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read NIH ChestX-ray14's ``Data_Entry_2017*.csv``.

    Columns used: ``Image Index``, ``Finding Labels`` ('|'-separated finding names, or
    "No Finding"), ``Patient ID`` and ``View Position``.

    * Labels: multilabel over :data:`~bundle.data.vocabulary.NIH_FINDINGS` (canonical names,
      e.g. "Effusion" -> "Pleural Effusion"), all known (mask 1). **"No Finding" is not an
      output**: in NIH it is exactly the all-zero vector (it never comes with a finding; a row
      that combines them is an error), and the standard ChestX-ray14 benchmarks (and
      ChestMNIST) use the 14 findings.
    * ``patient_id``: ``Patient ID`` as 8 digits ("00000001", as in the image names).
    * Image path: with ``check_files=True`` images are looked up by file name anywhere below
      ``image_root`` (default: the csv's folder), so the shipped ``images_001/images/...``
      folders work as they are; with ``check_files=False``: ``image_root/images/<Image Index>``
      when ``image_root/images`` is a folder, else ``image_root/<Image Index>``.
    * Official split: ``train_val_list`` / ``test_list`` (one image name per line; when not
      given, ``train_val_list.txt`` / ``test_list.txt`` beside the csv are used if present)
      fill ``splits["train"]`` and ``splits["test"]``; carve validation from train by patient
      with :func:`bundle.data.splits.split_from_official`. Names in a list but not in the csv
      are ignored (so a subset csv works); an image in both lists is an error.
    * ``bbox_csv`` (``BBox_List_2017.csv``, see :func:`read_nih_boxes`): records with boxes get
      ``"boxes": [{"label": canonical, "box": [x_min, y_min, x_max, y_max]}]`` in the pixels of the
      image file: NIH's boxes lie on the 1024 px grid of its release, and users often hold
      downsampled copies (``nih14_subset`` is at 512 px), so with ``check_files=True`` each boxed
      image's size is read from its header and its boxes scaled to it (:func:`nih_boxes_to_image`);
      with ``check_files=False`` they stay on the 1024 px grid. Boxes of images not in the csv are
      ignored.
    * RGBA or RGB files (a few in NIH's release) are read as grey by the loader
      (:func:`bundle.data.io.load_cxr`).
    """
    path = _existing_file(data_entry_csv)
    df = _read_csv(path, ["Image Index", "Finding Labels", "Patient ID", "View Position"])
    _check_unique(df, ["Image Index"], path)
    names = df["Image Index"].astype(str).str.strip().tolist()
    label = _nih_labels(df["Finding Labels"], path)
    patient = df["Patient ID"].astype(str).str.strip().str.zfill(8).tolist()
    view = df["View Position"].map(normalise_view, na_action="ignore").fillna("UNKNOWN").tolist()
    images = _resolve_by_name(_root(image_root, path), names, ("",), check_files, path, missing=missing,
                              allow_outside_paths=allow_outside_paths, column="Image Index")
    records = _make_records(images, label, np.ones_like(label), patient, view)
    if bbox_csv is not None:
        _attach_boxes(records, names, read_nih_boxes(bbox_csv))
        if check_files:
            for record in records:
                if "boxes" in record:
                    record["boxes"] = nih_boxes_to_image(record["boxes"], record["image"])
    splits = _nih_official_splits(path, names, records, train_val_list, test_list)
    return Datalist(records, list(NIH_FINDINGS), "multilabel", splits, source=str(path))


def _nih_labels(findings: pd.Series, path: Path) -> np.ndarray:
    blank = findings.isna() | (findings.astype(str).str.strip() == "")
    if blank.any():
        raise CXRDataError(path, f"blank 'Finding Labels' at {_row(int(np.flatnonzero(blank)[0]))}")
    tokens = findings.astype(str).str.split("|").explode()  # index: the row of each token
    names = _canonical_column(tokens, (*NIH_FINDINGS, "No Finding"), path, "Finding Labels", "NIH").to_numpy()
    rows = tokens.index.to_numpy()
    is_none = names == "No Finding"
    mixed = np.intersect1d(rows[is_none], rows[~is_none])
    if len(mixed):
        raise CXRDataError(
            path,
            f"'No Finding' with other findings in 'Finding Labels' at {_row(int(mixed[0]))} "
            f"({len(mixed)} rows)",
        )
    label = np.zeros((len(findings), len(NIH_FINDINGS)), np.float32)
    column = {name: j for j, name in enumerate(NIH_FINDINGS)}
    label[rows[~is_none], [column[n] for n in names[~is_none]]] = 1.0
    return label


def read_nih_boxes(bbox_csv: PathLike) -> dict[str, list[dict[str, Any]]]:
    """Read NIH's ``BBox_List_2017.csv``: image name -> ``[{"label", "box"}]``.

    The real header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (so pandas sees the
    columns "Bbox [x", "y", "w", "h]" and three empty ones); plain "x", "y", "w", "h" are
    accepted too. Boxes become ``[x_min, y_min, x_max, y_max]`` in pixels of the 1024 x 1024
    images; labels are canonical ("Infiltrate" -> "Infiltration", "Effusion" -> "Pleural Effusion").
    """
    path = _existing_file(bbox_csv)
    df = _read_csv(path, ["Image Index", "Finding Label"], allow_empty=True)
    xywh = ["Bbox [x", "y", "w", "h]"] if "Bbox [x" in df.columns else ["x", "y", "w", "h"]
    _check_columns(df, xywh, path)
    x, y, w, h = _parse_numbers(df, xywh, path).T
    labels = _canonical_column(df["Finding Label"], NIH_FINDINGS, path, "Finding Label", "NIH")
    boxes: dict[str, list[dict[str, Any]]] = {}
    for name, finding, *box in zip(df["Image Index"].astype(str).str.strip(), labels, x, y, x + w, y + h):
        boxes.setdefault(name, []).append({"label": finding, "box": [float(v) for v in box]})
    return boxes


def image_file_size(path: PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of an image file from its header (the pixels are not decoded); None if unreadable."""
    from PIL import Image

    if path_problem(path) is not None:  # missing, or a pipe / device that opening would block on
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def nih_boxes_to_image(boxes: Sequence[Mapping[str, Any]], image: PathLike, grid: int = NIH_BOX_GRID
                       ) -> list[dict[str, Any]]:
    """NIH boxes from the 1024 px grid of NIH's release to the pixels of the file at ``image``.

    NIH's PNGs are 1024 x 1024, and so is the grid of ``BBox_List_2017.csv``; a copy resized to
    ``W x H`` has its boxes at ``x * W / 1024, y * H / 1024``. The size is read from the file's
    header; boxes are returned unchanged when it cannot be read.
    """
    size = image_file_size(image)
    if size is None or size == (grid, grid):
        return [dict(b) for b in boxes]
    sx, sy = size[0] / grid, size[1] / grid
    return [{**b, "box": [float(b["box"][0]) * sx, float(b["box"][1]) * sy,
                          float(b["box"][2]) * sx, float(b["box"][3]) * sy]} for b in boxes]


def _nih_official_splits(
    path: Path,
    names: list[str],
    records: list[Record],
    train_val_list: PathLike | None,
    test_list: PathLike | None,
) -> dict[str, list[Record]]:
    given = {"train": train_val_list, "test": test_list}
    beside = {"train": path.parent / "train_val_list.txt", "test": path.parent / "test_list.txt"}
    lists = {s: given[s] if given[s] is not None else beside[s] for s in given}
    lists = {s: f for s, f in lists.items() if given[s] is not None or Path(f).is_file()}
    members = {split: set(_read_name_list(file)) for split, file in lists.items()}
    both = members.get("train", set()) & members.get("test", set())
    if both:
        example = sorted(both)[0]
        raise CXRDataError(lists["test"], f"{len(both)} images also in the train/val list, e.g. {example!r}")
    return {split: [r for n, r in zip(names, records) if n in keep] for split, keep in members.items()}


def _read_name_list(list_path: PathLike) -> list[str]:
    return [line.strip() for line in _existing_file(list_path).read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------- VinDr-CXR

_VINDR_BOX = ["x_min", "y_min", "x_max", "y_max"]


def read_vindr(
    annotations_csv: PathLike,
    image_root: PathLike | None = None,
    *,
    vote: Literal["majority", "any"] | int = "majority",
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read VinDr-CXR's ``train.csv`` (one row per radiologist finding): one record per image.

    Columns: ``image_id, class_name, rad_id, x_min, y_min, x_max, y_max`` (``class_id`` is not
    needed). "No finding" rows have empty boxes. Each image was read by several radiologists
    (3 for every image of the real train.csv), counted as its distinct ``rad_id``.

    * Labels over :data:`~bundle.data.vocabulary.VINDR_FINDINGS` (14 findings, then
      "No Finding"), all known. A finding is positive when the number of distinct
      radiologists who marked it is: ``vote="majority"``: more than half of the image's
      radiologists (2 of 3); ``"any"``: at least one; an integer ``k``: at least ``k``.
      "No Finding" is derived: 1 exactly when no finding is positive after the vote.
    * ``boxes``: every box drawn for a finding that is positive after the vote (from each
      radiologist who marked it), ``{"label", "box": [x_min, y_min, x_max, y_max], "rad_id"}``;
      boxes of findings that lost the vote are dropped.
    * ``patient_id`` = ``image_id``: VinDr-CXR publishes **no patient ids** (one patient per
      image is assumed). ``view`` is "UNKNOWN" (not given).
    * Images are DICOM: ``image_root/<image_id>.dicom`` (or ``.dcm``; looked up anywhere below
      ``image_root`` when ``check_files=True``; default root: the csv's folder).
    """
    path = _existing_file(annotations_csv)
    needed = _votes_needed(vote)
    df = _read_csv(path, ["image_id", "class_name", "rad_id", *_VINDR_BOX])
    _check_unique(df, list(df.columns), path)
    findings = _canonical_column(df["class_name"], VINDR_FINDINGS, path, "class_name", "VinDr-CXR")
    df = df.assign(image_id=df["image_id"].astype(str).str.strip(), finding=findings)
    box = _parse_numbers(df, _VINDR_BOX, path)

    image_ids = list(pd.unique(df["image_id"]))
    row_of = pd.Series(np.arange(len(image_ids)), index=image_ids)
    col_of = {name: j for j, name in enumerate(VINDR_FINDINGS)}
    n_rads = df.groupby("image_id")["rad_id"].nunique().reindex(image_ids).to_numpy()
    found = df[df["finding"] != "No Finding"]
    votes = found.groupby(["image_id", "finding"])["rad_id"].nunique()
    counts = np.zeros((len(image_ids), len(VINDR_FINDINGS)), np.float32)
    rows = row_of[votes.index.get_level_values(0)].to_numpy()
    counts[rows, [col_of[c] for c in votes.index.get_level_values(1)]] = votes.to_numpy()
    majority = counts > n_rads[:, None] / 2.0
    label = (majority if needed is None else counts >= needed).astype(np.float32)
    label[:, col_of["No Finding"]] = label.sum(axis=1) == 0

    won = label[row_of[found["image_id"]].to_numpy(), [col_of[c] for c in found["finding"]]] == 1
    kept = found[won & ~np.isnan(box[found.index.to_numpy()]).any(axis=1)]
    boxes: dict[str, list[dict[str, Any]]] = {}
    kept_boxes = box[kept.index.to_numpy()].tolist()
    for image_id, finding, rad, coords in zip(kept["image_id"], kept["finding"], kept["rad_id"], kept_boxes):
        boxes.setdefault(image_id, []).append({"label": finding, "box": coords, "rad_id": str(rad)})

    first_rows = df.index[~df["image_id"].duplicated()].to_numpy()
    images = _resolve_by_name(_root(image_root, path), image_ids, (".dicom", ".dcm"), check_files, path,
                              missing=missing, allow_outside_paths=allow_outside_paths, column="image_id",
                              rows=first_rows)
    records = _make_records(images, label, np.ones_like(label), image_ids, ["UNKNOWN"] * len(image_ids))
    _attach_boxes(records, image_ids, boxes)
    return Datalist(records, list(VINDR_FINDINGS), "multilabel", source=str(path))


def _votes_needed(vote: str | int) -> int | None:
    """Radiologists needed for a positive finding; ``None`` = more than half."""
    if vote == "majority":
        return None
    if vote == "any":
        return 1
    if isinstance(vote, (int, np.integer)) and not isinstance(vote, bool) and vote >= 1:
        return int(vote)
    raise ValueError(f"vote must be 'majority', 'any' or an integer >= 1, not {vote!r}")


# ----------------------------------------------------------------------------------------- generic CSV


def read_csv_datalist(
    csv_path: PathLike,
    image_root: PathLike | None = None,
    *,
    image_column: str = "image",
    label_columns: Sequence[str] | None = None,
    class_column: str | None = None,
    class_names: Sequence[str] | None = None,
    patient_column: str | None = None,
    view_column: str | None = None,
    class_map: Mapping[str, str] | None = None,
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read a generic CSV with one row per image, in one of two forms.

    * **multilabel**: ``label_columns`` are 0/1 columns (1.0/0.0 accepted); a blank cell is an
      unknown label (mask 0); any other value is an error. ``class_names`` (same length), if
      given, renames the classes; otherwise the column names are the class names.
    * **multiclass**: ``class_column`` holds a class name per row (a blank is an error).
      ``class_map`` first maps raw values to class names (e.g. ``{"covid": "COVID-19"}``).
      ``class_names`` fixes the order (a value not in it is an error); default: sorted unique.

    ``image_column`` holds paths, relative to ``image_root`` (default: the csv's folder) or
    absolute, inside ``image_root`` unless ``allow_outside_paths``; each image may appear only once.
    ``patient_column`` gives patient ids (default: the image file's stem, i.e. one patient per image);
    ``view_column`` gives views
    (normalised with :func:`normalise_view`; default "UNKNOWN").
    """
    if (label_columns is None) == (class_column is None):
        raise ValueError("give exactly one of label_columns (multilabel) or class_column (multiclass)")
    path = _existing_file(csv_path)
    optional = [c for c in (patient_column, view_column) if c is not None]
    df = _read_csv(path, [image_column, *(label_columns or [class_column]), *optional])
    _check_unique(df, [image_column], path)
    blank = df[image_column].isna().to_numpy()
    if blank.any():
        raise CXRDataError(path, f"blank {image_column!r} at {_row(int(np.flatnonzero(blank)[0]))}")
    rel = df[image_column].astype(str).str.strip()

    if label_columns is not None:
        codes = _parse_codes(df, label_columns, (1.0, 0.0), path, "1, 0 or blank")
        label, mask = np.nan_to_num(codes, nan=0.0).astype(np.float32), (~np.isnan(codes)).astype(np.float32)
        names = list(class_names) if class_names is not None else list(label_columns)
        if len(names) != len(label_columns):
            raise ValueError(f"class_names has {len(names)} names for {len(label_columns)} label columns")
        task = "multilabel"
    else:
        values = df[class_column].astype("string").str.strip()
        if class_map is not None:
            values = values.replace(dict(class_map))
        names = list(class_names) if class_names is not None else sorted(values.dropna().unique())
        values = _check_values(values, names, path, class_column, shown=df[class_column])
        index = values.map({n: i for i, n in enumerate(names)}).to_numpy(int)
        label = np.eye(len(names), dtype=np.float32)[index]
        mask, task = np.ones_like(label), "multiclass"

    if patient_column is not None:
        patient = df[patient_column].astype(str).str.strip().tolist()
    else:
        patient = [Path(p).stem for p in rel]
    view = ["UNKNOWN"] * len(df)
    if view_column is not None:
        view = df[view_column].map(normalise_view, na_action="ignore").fillna("UNKNOWN").tolist()
    root = _root(image_root, path)
    _check_inside(root, rel, path, image_column, allow_outside_paths)
    images = _join(root, rel)
    if check_files:
        _check_files_exist(images, path, root, missing)
    return Datalist(_make_records(images, label, mask, patient, view), names, task, source=str(path))


def read_cxr3(root: PathLike, *, check_files: bool = True, missing: Missing = "raise",
              allow_outside_paths: bool = False) -> Datalist:
    """Read the cxr3 set: ``root/metadata.csv`` and ``root/images/``.

    ``metadata.csv`` columns: ``image,patient_id,label,finding,view,sex,age,source``; ``image``
    is relative to ``root`` ("images/<name>.png"); ``label`` is ``normal``, ``pneumonia`` or
    ``covid`` -> multiclass ``["Normal", "Pneumonia", "COVID-19"]`` (any other value is an
    error with its row). Views "AP Supine" / "AP erect" become "AP"; blank -> "UNKNOWN".
    Several images per patient: split with :func:`bundle.data.splits.patient_split`.
    """
    return read_csv_datalist(
        Path(root) / "metadata.csv",
        root,
        image_column="image",
        class_column="label",
        class_names=CXR3_CLASSES,
        class_map={"normal": "Normal", "pneumonia": "Pneumonia", "covid": "COVID-19"},
        patient_column="patient_id",
        view_column="view",
        check_files=check_files,
        missing=missing,
        allow_outside_paths=allow_outside_paths,
    )


# ----------------------------------------------------------------------------------------- PadChest

#: PadChest's ``Projection`` values: PA, AP (erect), AP_horizontal (supine, horizontal beam), L (lateral),
#: COSTAL (rib views), EXCLUDE and UNK (not classified).
PADCHEST_PROJECTIONS: tuple[str, ...] = ("PA", "AP", "AP_horizontal", "L", "COSTAL", "EXCLUDE", "UNK")
_PADCHEST_COLUMNS = ["ImageID", "ImageDir", "PatientID", "Projection", "MethodLabel", "Labels"]
_PADCHEST_DROP_TERMS = {"exclude": "marked 'exclude'", "suboptimal study": "marked 'suboptimal study'"}


def read_padchest(
    csv_path: PathLike,
    image_root: PathLike | None = None,
    *,
    projections: Sequence[str] | None = ("PA", "AP", "AP_horizontal"),
    physician_only: bool = False,
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read PadChest's label file (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]``).

    Columns used: ``ImageID`` (file name), ``ImageDir`` (its folder, 0..54), ``PatientID``,
    ``Projection``, ``MethodLabel`` and ``Labels``, a Python-list string of report terms such as
    ``"['pleural effusion', 'cardiomegaly']"``, parsed as a literal (:func:`ast.literal_eval`,
    never evaluated as code; anything but a list of strings is an error naming the row).

    * Labels: multilabel over :data:`~bundle.data.vocabulary.PADCHEST_FINDINGS`; each term
      (stripped, lower case) maps through :data:`~bundle.data.vocabulary.PADCHEST_TERMS` (a class
      and its more specific terms: "lobar atelectasis" -> Atelectasis); terms that are no class
      are ignored. "No Finding" = the term "normal" and no class finding (226 real rows list
      "normal" beside a finding: the finding wins). All labels are known (mask 1).
    * Rows left out, counted in ``Datalist.dropped`` (shown in the split summary): no labels
      (blank or an empty list), "exclude", "suboptimal study", a ``Projection`` not in
      ``projections`` (default: the frontal PA, AP and AP_horizontal; ``None`` keeps every one,
      see :data:`PADCHEST_PROJECTIONS`), and with ``physician_only`` the rows labelled by
      PadChest's RNN rather than by a physician (``MethodLabel``).
    * ``patient_id``: ``PatientID`` (a patient has several studies: split by patient).
      ``view``: PA, AP (also AP_horizontal), LATERAL (L), else UNKNOWN.
    * Image path: ``image_root/<ImageDir>/<ImageID>`` (default root: the csv's folder); the
      images are 16-bit PNGs holding 10- or 12-bit data, which :func:`bundle.data.load_cxr`
      scales by its significant-bits rule.
    """
    path = _existing_file(csv_path)
    wanted = None if projections is None else [projections] if isinstance(projections, str) else list(projections)
    unknown = [v for v in wanted or [] if v not in PADCHEST_PROJECTIONS]
    if unknown:
        raise ValueError(f"unknown PadChest projection(s) {unknown}; known: {', '.join(PADCHEST_PROJECTIONS)}")
    df = _read_csv(path, _PADCHEST_COLUMNS, only_required=True, dtype=str)
    _check_unique(df, ["ImageDir", "ImageID"], path)
    terms = _padchest_terms(df["Labels"], path)

    dropped: dict[str, int] = {}
    keep = np.ones(len(df), bool)

    def drop(reason: str, rows: np.ndarray) -> None:
        nonlocal keep
        count = int((keep & rows).sum())
        if count:
            dropped[reason] = count
        keep &= ~rows

    drop("with no labels", terms.map(len).to_numpy() == 0)
    for term, reason in _PADCHEST_DROP_TERMS.items():
        drop(reason, terms.map(lambda found, term=term: term in found).to_numpy(bool))
    projection = df["Projection"].fillna("").str.strip()
    if wanted is not None:
        drop(f"with a projection other than {', '.join(wanted)}", ~projection.isin(wanted).to_numpy())
    if physician_only:
        drop("not labelled by a physician (MethodLabel)", (df["MethodLabel"].fillna("").str.strip() != "Physician")
             .to_numpy())
    if not keep.any():
        left_out = "; ".join(f"{count} {reason}" for reason, count in dropped.items())
        raise CXRDataError(path, f"no rows left after the filters ({left_out})")

    kept = terms[keep]
    column = {name: j for j, name in enumerate(PADCHEST_FINDINGS)}
    label = np.zeros((len(kept), len(PADCHEST_FINDINGS)), np.float32)
    for i, found in enumerate(kept):
        for term in found:
            canonical = PADCHEST_TERMS.get(term)
            if canonical is not None:
                label[i, column[canonical]] = 1.0
    no_finding = column["No Finding"]
    label[label[:, [j for j in range(len(PADCHEST_FINDINGS)) if j != no_finding]].any(axis=1), no_finding] = 0.0

    rel = (df["ImageDir"].fillna("").str.strip() + "/" + df["ImageID"].fillna("").str.strip())[keep]
    root = _root(image_root, path)
    _check_inside(root, rel, path, "ImageDir/ImageID", allow_outside_paths)
    images = _join(root, rel)
    if check_files:
        _check_files_exist(images, path, root, missing)
    patient = df["PatientID"].fillna("").str.strip()[keep].tolist()
    view = projection[keep].map(normalise_view).tolist()
    records = _make_records(images, label, np.ones_like(label), patient, view)
    return Datalist(records, list(PADCHEST_FINDINGS), "multilabel", dropped=dropped, source=str(path))


def _padchest_terms(labels: pd.Series, path: Path) -> pd.Series:
    """Each row's report terms as a frozenset of stripped, lower-case strings (empty for a blank cell)."""
    parsed: dict[str, frozenset[str]] = {}
    for text in labels.dropna().unique():
        try:
            value = ast.literal_eval(text)  # a literal only: never runs code
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            row = int(np.flatnonzero((labels == text).to_numpy())[0])
            raise CXRDataError(path, f"'Labels' at {_row(row)} is not a list of terms: {text[:80]!r} "
                                     f"({type(exc).__name__})") from exc
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            row = int(np.flatnonzero((labels == text).to_numpy())[0])
            raise CXRDataError(path, f"'Labels' at {_row(row)} is not a list of terms: {text[:80]!r}")
        parsed[text] = frozenset(t.strip().lower() for t in value if t.strip())
    empty: frozenset[str] = frozenset()
    return labels.map(lambda text: parsed.get(text, empty) if isinstance(text, str) else empty)


# ----------------------------------------------------------------------------------------- image folder

_SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


def read_image_folder(
    root: PathLike,
    *,
    extensions: Sequence[str] | None = None,
    patient_id_from: str | re.Pattern[str] | None = None,
) -> Datalist:
    """Read a folder-per-class layout into a multiclass datalist.

    Two layouts are accepted:

    * ``root/<CLASS>/<image>`` (e.g. ``root/NORMAL/*.png``, ``root/PNEUMONIA/*.png``);
    * Kermany et al.'s ``root/{train,val,test}/<CLASS>/<image>``: fills ``splits``
      ("train", "validation" (from "val" or "validation"), "test"); ``records`` holds them all.

    Class names are the sub-folder names as they are, sorted. Every file anywhere below a class
    folder is a record (in sorted order; hidden entries, names starting with ``.``, are not), so a
    file the loader refuses (a text file, a GIF, a named pipe ...) is reported by the data-set
    check like any other bad record instead of being passed over; ``extensions`` (e.g.
    ``(".png", ".jpeg")``, any case) keeps only files with those endings. Errors: fewer than two
    classes (a classifier needs two), an empty class folder, a split folder without class folders.

    ``patient_id_from``: ``None`` -> the file stem (one patient per image); ``"kermany"`` ->
    :data:`KERMANY_PATIENT_PATTERN` ("person1_bacteria_1.jpeg" -> "person1",
    "IM-0115-0001.jpeg" -> "IM-0115"); or a regular expression searched in the file name, whose
    group "patient" (else group 1, else the whole match) is the patient id; a file name it
    does not match is an error. Kermany's published split is kept as it is.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise CXRDataError(folder, "image folder does not exist")
    split_dirs = [(_SPLIT_FOLDERS.get(p.name.lower()), p) for p in _subfolders(folder)]
    split_dirs = [(split, p) for split, p in split_dirs if split is not None]
    groups = sorted(split_dirs, key=lambda g: _SPLIT_ORDER[g[0]]) or [(None, folder)]
    suffixes = None if extensions is None else tuple(e.lower() for e in extensions)
    found: list[tuple[str | None, str, Path]] = []  # split, class, file
    for split, base in groups:
        class_dirs = _subfolders(base)
        if not class_dirs:
            raise CXRDataError(base, "no class sub-folders (expected <folder>/<CLASS>/<images>)")
        for class_dir in class_dirs:
            entries, _ = list_folder(class_dir)
            files = [f for f in entries if suffixes is None or f.name.lower().endswith(suffixes)]
            if not files:
                wanted = f" with {', '.join(extensions)}" if extensions is not None else ""
                raise CXRDataError(class_dir, f"empty class folder: no files{wanted} of class {class_dir.name!r}; "
                                              f"add its images or remove the folder")
            found += [(split, class_dir.name, f) for f in files]
    class_names = sorted({c for _, c, _ in found})
    if len(class_names) < 2:
        raise CXRDataError(folder, f"only one class folder ({class_names[0]!r}): a classifier needs at least two "
                                   f"classes, one sub-folder each")

    pattern = _patient_pattern(patient_id_from)
    patients = [_patient_from_name(f, pattern) for _, _, f in found]
    unmatched = [str(f) for (_, _, f), p in zip(found, patients) if p is None]
    if unmatched:
        raise CXRDataError(
            folder,
            f"{len(unmatched)} file names do not match patient_id_from {pattern.pattern!r}, "
            f"e.g. {unmatched[:_MAX_LISTED]}",
        )
    index = {c: i for i, c in enumerate(class_names)}
    label = np.eye(len(class_names), dtype=np.float32)[[index[c] for _, c, _ in found]]
    images = [str(f) for _, _, f in found]
    records = _make_records(images, label, np.ones_like(label), patients, ["UNKNOWN"] * len(found))
    splits: dict[str, list[Record]] = {}
    for (split, _, _), record in zip(found, records):
        if split is not None:
            splits.setdefault(split, []).append(record)
    return Datalist(records, class_names, "multiclass", splits, source=str(folder))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _patient_pattern(spec: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if spec is None:
        return None
    if isinstance(spec, str) and spec.lower() == "kermany":
        spec = KERMANY_PATIENT_PATTERN
    return re.compile(spec) if isinstance(spec, str) else spec


def _patient_from_name(file: Path, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is None:
        return file.stem
    match = pattern.search(file.name)
    if match is None:
        return None
    if "patient" in pattern.groupindex:
        return match.group("patient")
    return match.group(1) if pattern.groups else match.group(0)


# ----------------------------------------------------------------------------------------- shared helpers


def normalise_view(value: Any) -> str:
    """A view name as one of :data:`~bundle.data.datalist.VIEWS`.

    Case-insensitive; "AP Supine" / "AP erect" -> "AP"; "L", "LAT", "LATERAL" -> "LATERAL";
    anything else (or blank) -> "UNKNOWN".
    """
    text = str(value).strip().upper()
    if text in VIEWS:
        return text
    first = text.replace("_", " ").split(" ")[0] if text else ""
    if first in ("AP", "PA"):
        return first
    if first in ("L", "LAT", "LATERAL"):
        return "LATERAL"
    return "UNKNOWN"


def _existing_file(path: PathLike) -> Path:
    file = Path(path)
    if not file.is_file():
        raise CXRDataError(file, "file does not exist" if not file.exists() else "is not a file")
    return file


def _read_csv(path: Path, required: Iterable[str], *, allow_empty: bool = False, only_required: bool = False,
              dtype: Any = None) -> pd.DataFrame:
    """Read a .csv / .csv.gz (column names stripped) and check the ``required`` columns.

    A file with a header and no data rows is an error unless ``allow_empty``. ``only_required``
    reads just those columns (large files with long free-text columns); ``dtype`` as pandas'.
    """
    required = list(dict.fromkeys(required))
    usecols = (lambda column: str(column).strip() in required) if only_required else None
    try:
        df = pd.read_csv(path, usecols=usecols, dtype=dtype, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError,
            zlib.error) as exc:
        raise CXRDataError(path, f"cannot be read as CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if only_required and not all(c in df.columns for c in required):  # name the file's own columns
        found = list(pd.read_csv(path, nrows=0).columns.str.strip())
        raise CXRDataError(path, f"missing column(s) {[c for c in required if c not in found]}; found {found}")
    _check_columns(df, required, path)
    if df.empty and not allow_empty:
        raise CXRDataError(path, "no data rows (the file has only its header): no images to train or test on")
    return df.reset_index(drop=True)


def _check_columns(df: pd.DataFrame, required: Iterable[str], path: Path) -> None:
    """All missing columns in one error, with the columns the file has."""
    missing = [c for c in dict.fromkeys(required) if c not in df.columns]
    if missing:
        raise CXRDataError(path, f"missing column(s) {missing}; found {list(df.columns)}")


def _row(position: int) -> str:
    """Human reference of a 0-based data-row position (the header is line 1)."""
    return f"row {position + 1} (line {position + 2})"


def _check_unique(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Error if rows repeat on ``columns``: how many, and the first example with both rows."""
    dup = df.duplicated(subset=columns, keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        hashes = pd.util.hash_pandas_object(df[columns], index=False).to_numpy()  # NaN-safe equality
        first = int(np.flatnonzero(hashes == hashes[i])[0])
        key = df.loc[i, columns]
        example = key.iloc[0] if len(columns) == 1 else dict(key)
        what = f"rows with the same {', '.join(map(repr, columns))}"
        what = "rows" if len(columns) == len(df.columns) else what
        raise CXRDataError(
            path, f"{int(dup.sum())} duplicate {what}, e.g. {example!r} at {_row(first)} and {_row(i)}"
        )


def _parse_codes(
    df: pd.DataFrame, columns: Sequence[str], allowed: tuple[float, ...], path: Path, allowed_text: str
) -> np.ndarray:
    """Label columns as a float array (N, C), NaN for blanks; any other value is an error."""
    out = np.empty((len(df), len(columns)), np.float64)
    for j, column in enumerate(columns):
        raw = df[column]
        numbers = raw.astype(float) if raw.dtype.kind in "fiub" else pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & ~numbers.isin(allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CXRDataError(
                path,
                f"unknown label value {str(raw.iloc[i])!r} in column {column!r} at {_row(i)}; "
                f"allowed: {allowed_text} ({int(bad.sum())} bad value(s) in this column)",
            )
        out[:, j] = numbers.to_numpy(dtype=float, na_value=np.nan)
    return out


def _parse_numbers(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """Numeric columns as float (N, C); blanks are NaN, text is an error with its row."""
    out = np.empty((len(df), len(columns)), np.float64)
    for j, column in enumerate(columns):
        numbers = pd.to_numeric(df[column], errors="coerce")
        bad = df[column].notna() & numbers.isna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = str(df[column].iloc[i])
            raise CXRDataError(path, f"not a number {value!r} in column {column!r} at {_row(i)}")
        out[:, j] = numbers.to_numpy(dtype=float, na_value=np.nan)
    return out


def _check_values(
    values: pd.Series, allowed: Sequence[str], path: Path, column: str, shown: pd.Series | None = None
) -> pd.Series:
    """The values, stripped; a value outside ``allowed`` (or a blank) is an error with its row.

    ``shown``: the raw column to quote in the message (when ``values`` were mapped).
    """
    stripped = values.astype("string").str.strip()
    bad = (~stripped.isin(list(allowed))).fillna(True).astype(bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = (shown if shown is not None else values).iloc[i]
        value = "blank" if pd.isna(raw) else repr(str(raw))
        raise CXRDataError(
            path,
            f"unknown value {value} in column {column!r} at {_row(i)}; "
            f"allowed: {', '.join(map(str, allowed))} ({int(bad.sum())} bad row(s))",
        )
    return stripped


def _canonical_column(
    values: pd.Series, allowed: Sequence[str], path: Path, column: str, dataset: str
) -> pd.Series:
    """Canonical finding names of a column, which must be classes of ``dataset``.

    ``values``' index gives the row of each value (an exploded column keeps its rows). An
    unknown name, or one that is not a class of the data set, is an error with its row.
    """
    stripped = values.astype(str).str.strip()
    mapping = {}
    for name in stripped.unique():
        try:
            canonical = canonical_finding(name)
            problem = None if canonical in allowed else f"finding {name!r} is not a {dataset} class"
        except CXRDataError:
            problem = f"unknown finding {name!r}"
        if problem is not None:
            row = int(stripped.index[int(np.flatnonzero((stripped == name).to_numpy())[0])])
            raise CXRDataError(
                path, f"{problem} in column {column!r} at {_row(row)}; allowed: {', '.join(allowed)}"
            )
        mapping[name] = canonical
    return stripped.map(mapping)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def _check_views(views: Sequence[str]) -> list[str]:
    views = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; known: {', '.join(VIEWS)}")
    return views


def _root(image_root: PathLike | None, label_file: Path) -> Path:
    return Path(image_root) if image_root is not None else label_file.parent


def _join(root: Path, relative: pd.Series | Sequence[str]) -> list[str]:
    """``root/relative`` for relative paths; absolute paths are kept (vectorised)."""
    relative = pd.Series(relative, dtype="string")
    absolute = relative.map(os.path.isabs) if os.name == "nt" else relative.str.startswith("/")
    base = str(root).rstrip("/\\") + os.sep
    return relative.where(absolute, base + relative).tolist()


def _check_inside(root: Path, relative: pd.Series, source: Path, column: str, allow_outside_paths: bool) -> None:
    """Refuse image paths that leave ``root`` (``..`` segments, absolute paths elsewhere), naming the rows.

    ``relative``: the paths as written in the label file, indexed by data-row position. Only
    absolute paths and paths with a ``..`` segment can leave; those are normalised (lexically:
    ``..`` resolved, symbolic links not) and compared with ``root``.
    """
    if allow_outside_paths or not len(relative):
        return
    text = relative.astype("string")
    absolute = text.map(os.path.isabs, na_action="ignore") if os.name == "nt" else text.str.startswith("/")
    suspect = (absolute.fillna(False).astype(bool)
               | text.str.contains(r"(?:^|[\\/])\.\.(?:[\\/]|$)", regex=True).fillna(False).astype(bool))
    if not suspect.any():
        return
    base = os.path.normpath(os.path.abspath(root))
    outside = []
    for row, value in text[suspect].items():
        full = os.path.normpath(os.path.join(base, value))  # an absolute value replaces base
        if os.path.commonpath([base, full]) != base:
            outside.append(f"{value!r} at {_row(int(row))}")
    if outside:
        raise CXRDataError(
            source,
            f"{len(outside)} image path(s) in column {column!r} leave the data folder {base}: "
            f"{', '.join(outside[:_MAX_LISTED])}{', ...' if len(outside) > _MAX_LISTED else ''}; move the images "
            f"inside it, set image_root to a folder that holds them all, or set the dataset option "
            f"allow_outside_paths to true (reader argument allow_outside_paths=True) if they are elsewhere on purpose",
        )


def _raise_missing(source: Path, root: Path, missing: list[str], total: int) -> None:
    """One error for all missing images: how many, and the first few."""
    where = f"image folder {root} does not exist; " if not root.is_dir() else ""
    raise CXRDataError(
        source, f"{where}{len(missing)} of {total} images do not exist, e.g. {missing[:_MAX_LISTED]}"
    )


def _check_files_exist(images: Sequence[str], source: Path, root: Path, missing: Missing = "raise") -> None:
    """``missing="raise"``: one error for all missing images; ``"keep"``: nothing (the data-set check reports them)."""
    _check_choice("missing", missing, ("raise", "keep"))
    if missing == "keep":
        return
    absent = _missing_files(images)
    if absent:
        _raise_missing(source, root, absent, len(images))


def _missing_files(paths: Iterable[str]) -> list[str]:
    """The paths that are not files; each folder is checked once, not once per file in it."""

    @lru_cache(maxsize=None)
    def folder_exists(folder: str) -> bool:
        parent = os.path.dirname(folder)
        if parent and parent != folder and not folder_exists(parent):
            return False
        return os.path.isdir(folder)

    return [p for p in paths if not (folder_exists(os.path.dirname(p) or ".") and os.path.isfile(p))]


def _index_folder(root: Path) -> dict[str, str]:
    """File name -> path of every file below ``root`` (the first in sorted walk order wins)."""
    index: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            index.setdefault(name, os.path.join(folder, name))
    return index


def _resolve_by_name(
    root: Path,
    names: list[str],
    suffixes: tuple[str, ...],
    check_files: bool,
    source: Path,
    *,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
    column: str = "image",
    rows: Sequence[int] | None = None,
) -> list[str]:
    """Image paths from file names (each tried with ``suffixes``), for sets shipped in sub-folders.

    ``check_files=True``: each name is looked up anywhere below ``root``; all missing in one
    error (``missing="keep"``: kept at ``<base>/<name><suffixes[0]>``, for the data-set check).
    ``check_files=False``: ``root/images/<name><suffixes[0]>`` if ``root/images`` is a
    folder, else ``root/<name><suffixes[0]>``; the disk is not searched. ``rows``: the data-row
    position of each name (default: its position), for messages.
    """
    _check_choice("missing", missing, ("raise", "keep"))
    base = root / "images" if (root / "images").is_dir() else root
    positions = range(len(names)) if rows is None else rows
    _check_inside(root, pd.Series([n + suffixes[0] for n in names], index=positions, dtype="string"), source, column,
                  allow_outside_paths)
    if not check_files:
        return _join(base, [n + suffixes[0] for n in names])
    index = _index_folder(root) if root.is_dir() else {}
    images = [next((index[n + s] for s in suffixes if n + s in index), None) for n in names]
    expected = [str(base / (n + suffixes[0])) for n in names]
    absent = [path for path, found in zip(expected, images) if found is None]
    if absent and missing == "raise":
        _raise_missing(source, root, absent, len(names))
    return [found if found is not None else path for path, found in zip(expected, images)]


def _attach_boxes(records: list[Record], keys: Sequence[str], boxes: Mapping[str, list[Record]]) -> None:
    """Add ``"boxes"`` to the records whose key has boxes (the others get no such key)."""
    for key, record in zip(keys, records):
        if key in boxes:
            record["boxes"] = boxes[key]


_ZERO_ONE = np.array([0.0, 1.0], dtype=object)


def _as_lists(array: np.ndarray) -> list[list[float]]:
    """``array.tolist()``, faster for 0/1 arrays (their floats are two shared objects)."""
    if array.size and np.isin(array, (0.0, 1.0)).all():
        return _ZERO_ONE[array.astype(np.intp)].tolist()
    return array.astype(float).tolist()


def _make_records(
    images: Sequence[Any],
    label: np.ndarray,
    mask: np.ndarray,
    patient_ids: Sequence[str],
    views: Sequence[str],
) -> list[Record]:
    """The record dictionaries of :mod:`bundle.data.datalist` (label vectors as lists of floats).

    The cyclic garbage collector is paused while the (up to hundreds of thousands of) records
    are built: they hold no cycles, and its repeated passes would double the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        rows = zip(images, _as_lists(label), _as_lists(mask), patient_ids, views)
        return [
            {"image": image, "label": lab, "label_mask": msk, "patient_id": str(pid), "view": view}
            for image, lab, msk, pid, view in rows
        ]
    finally:
        if was_enabled:
            gc.enable()
