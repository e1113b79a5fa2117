"""Folder-per-class layouts: ``<root>/<CLASS>/`` and Kermany et al.'s ``<root>/{train,val,test}/<CLASS>/``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datalist import Datalist
from ..errors import CXRDataError
from ..io import list_folder
from .common import MAX_LISTED, PathLike, Record, make_records

__all__ = ["KERMANY_PATIENT_PATTERN", "read_image_folder"]

#: Patient id in Kermany et al.'s file names: "person1_bacteria_1.jpeg" -> "person1",
#: "IM-0115-0001.jpeg" -> "IM-0115", "NORMAL2-IM-1427-0001.jpeg" -> "NORMAL2-IM-1427".
KERMANY_PATIENT_PATTERN = r"^(?P<patient>person\d+|(?:NORMAL\d*-)?IM-\d+)(?=[_-])"


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
                raise CXRDataError(class_dir, f"empty class folder: no files{wanted} of class "
                                              f"{class_dir.name!r}; add its images or remove the folder")
            found += [(split, class_dir.name, f) for f in files]
    class_names = sorted({c for _, c, _ in found})
    if len(class_names) < 2:
        raise CXRDataError(folder, f"only one class folder ({class_names[0]!r}): a classifier needs at least "
                                   f"two classes, one sub-folder each")

    pattern = _patient_pattern(patient_id_from)
    patients = [_patient_from_name(f, pattern) for _, _, f in found]
    unmatched = [str(f) for (_, _, f), p in zip(found, patients) if p is None]
    if unmatched:
        raise CXRDataError(
            folder,
            f"{len(unmatched)} file names do not match patient_id_from {pattern.pattern!r}, "
            f"e.g. {unmatched[:MAX_LISTED]}",
        )
    index = {c: i for i, c in enumerate(class_names)}
    label = np.eye(len(class_names), dtype=np.float32)[[index[c] for _, c, _ in found]]
    images = [str(f) for _, _, f in found]
    records = make_records(images, label, np.ones_like(label), patients, ["UNKNOWN"] * len(found))
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
