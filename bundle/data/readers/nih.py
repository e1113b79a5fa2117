"""NIH ChestX-ray14: ``Data_Entry_2017*.csv``, its official split lists and ``BBox_List_2017.csv``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..datalist import Datalist
from ..errors import CXRDataError
from ..io import path_problem
from ..vocabulary import NIH_FINDINGS
from .common import (
    Missing,
    PathLike,
    Record,
    attach_boxes,
    canonical_column,
    check_columns,
    check_unique,
    describe_row,
    existing_file,
    image_root_for,
    make_records,
    normalise_view,
    parse_numbers,
    read_csv,
    resolve_by_name,
)

__all__ = ["NIH_BOX_GRID", "image_file_size", "nih_boxes_to_image", "read_nih", "read_nih_boxes"]

NIH_BOX_GRID = 1024  # BBox_List_2017.csv's coordinates are pixels of NIH's 1024 x 1024 release


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
    path = existing_file(data_entry_csv)
    df = read_csv(path, ["Image Index", "Finding Labels", "Patient ID", "View Position"])
    check_unique(df, ["Image Index"], path)
    names = df["Image Index"].astype(str).str.strip().tolist()
    label = _nih_labels(df["Finding Labels"], path)
    patient = df["Patient ID"].astype(str).str.strip().str.zfill(8).tolist()
    view = df["View Position"].map(normalise_view, na_action="ignore").fillna("UNKNOWN").tolist()
    images = resolve_by_name(image_root_for(image_root, path), names, ("",), check_files, path,
                             missing=missing, allow_outside_paths=allow_outside_paths, column="Image Index")
    records = make_records(images, label, np.ones_like(label), patient, view)
    if bbox_csv is not None:
        attach_boxes(records, names, read_nih_boxes(bbox_csv))
        if check_files:
            for record in records:
                if "boxes" in record:
                    record["boxes"] = nih_boxes_to_image(record["boxes"], record["image"])
    splits = _nih_official_splits(path, names, records, train_val_list, test_list)
    return Datalist(records, list(NIH_FINDINGS), "multilabel", splits, source=str(path))


def _nih_labels(findings: pd.Series, path: Path) -> np.ndarray:
    blank = findings.isna() | (findings.astype(str).str.strip() == "")
    if blank.any():
        raise CXRDataError(path, f"blank 'Finding Labels' at {describe_row(int(np.flatnonzero(blank)[0]))}")
    tokens = findings.astype(str).str.split("|").explode()  # index: the row of each token
    names = canonical_column(tokens, (*NIH_FINDINGS, "No Finding"), path, "Finding Labels", "NIH").to_numpy()
    rows = tokens.index.to_numpy()
    is_none = names == "No Finding"
    mixed = np.intersect1d(rows[is_none], rows[~is_none])
    if len(mixed):
        raise CXRDataError(
            path,
            f"'No Finding' with other findings in 'Finding Labels' at {describe_row(int(mixed[0]))} "
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
    path = existing_file(bbox_csv)
    df = read_csv(path, ["Image Index", "Finding Label"], allow_empty=True)
    xywh = ["Bbox [x", "y", "w", "h]"] if "Bbox [x" in df.columns else ["x", "y", "w", "h"]
    check_columns(df, xywh, path)
    x, y, w, h = parse_numbers(df, xywh, path).T
    labels = canonical_column(df["Finding Label"], NIH_FINDINGS, path, "Finding Label", "NIH")
    boxes: dict[str, list[dict[str, Any]]] = {}
    for name, finding, *box in zip(df["Image Index"].astype(str).str.strip(), labels, x, y, x + w, y + h):
        boxes.setdefault(name, []).append({"label": finding, "box": [float(v) for v in box]})
    return boxes


def image_file_size(path: PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of an image file from its header (pixels not decoded); None if unreadable."""
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
    return [line.strip() for line in existing_file(list_path).read_text().splitlines() if line.strip()]
