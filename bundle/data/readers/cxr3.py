"""The cxr3 set (normal / pneumonia / COVID-19): ``metadata.csv`` and ``images/``, read as a generic CSV."""

from __future__ import annotations

from pathlib import Path

from ..datalist import Datalist
from .common import Missing, PathLike
from .csv_datalist import read_csv_datalist

__all__ = ["CXR3_CLASSES", "read_cxr3"]

CXR3_CLASSES: tuple[str, ...] = ("Normal", "Pneumonia", "COVID-19")


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
