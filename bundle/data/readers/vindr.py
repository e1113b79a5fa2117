"""VinDr-CXR's ``train.csv``: one row per radiologist finding, voted into one record per image."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from ..datalist import Datalist
from ..vocabulary import VINDR_FINDINGS
from .common import (
    Missing,
    PathLike,
    attach_boxes,
    canonical_column,
    check_unique,
    existing_file,
    image_root_for,
    make_records,
    parse_numbers,
    read_csv,
    resolve_by_name,
)

__all__ = ["read_vindr"]


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
    path = existing_file(annotations_csv)
    needed = _votes_needed(vote)
    df = read_csv(path, ["image_id", "class_name", "rad_id", *_VINDR_BOX])
    check_unique(df, list(df.columns), path)
    findings = canonical_column(df["class_name"], VINDR_FINDINGS, path, "class_name", "VinDr-CXR")
    df = df.assign(image_id=df["image_id"].astype(str).str.strip(), finding=findings)
    box = parse_numbers(df, _VINDR_BOX, path)

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
    images = resolve_by_name(image_root_for(image_root, path), image_ids, (".dicom", ".dcm"), check_files,
                             path, missing=missing, allow_outside_paths=allow_outside_paths,
                             column="image_id", rows=first_rows)
    records = make_records(images, label, np.ones_like(label), image_ids, ["UNKNOWN"] * len(image_ids))
    attach_boxes(records, image_ids, boxes)
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
