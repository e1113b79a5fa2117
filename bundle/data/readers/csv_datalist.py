"""A generic label CSV: one row per image, 0/1 label columns or one class-name column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..datalist import Datalist
from ..errors import CXRDataError
from .common import (
    Missing,
    PathLike,
    check_files_exist,
    check_inside,
    check_unique,
    check_values,
    describe_row,
    existing_file,
    image_root_for,
    join_paths,
    make_records,
    normalise_view,
    parse_codes,
    read_csv,
)

__all__ = ["read_csv_datalist"]


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
    ``view_column`` gives views (normalised with :func:`normalise_view`; default "UNKNOWN").
    """
    if (label_columns is None) == (class_column is None):
        raise ValueError("give exactly one of label_columns (multilabel) or class_column (multiclass)")
    path = existing_file(csv_path)
    optional = [c for c in (patient_column, view_column) if c is not None]
    df = read_csv(path, [image_column, *(label_columns or [class_column]), *optional])
    check_unique(df, [image_column], path)
    blank = df[image_column].isna().to_numpy()
    if blank.any():
        raise CXRDataError(path, f"blank {image_column!r} at {describe_row(int(np.flatnonzero(blank)[0]))}")
    rel = df[image_column].astype(str).str.strip()

    if label_columns is not None:
        codes = parse_codes(df, label_columns, (1.0, 0.0), path, "1, 0 or blank")
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
        values = check_values(values, names, path, class_column, shown=df[class_column])
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
    root = image_root_for(image_root, path)
    check_inside(root, rel, path, image_column, allow_outside_paths)
    images = join_paths(root, rel)
    if check_files:
        check_files_exist(images, path, root, missing)
    return Datalist(make_records(images, label, mask, patient, view), names, task, source=str(path))
