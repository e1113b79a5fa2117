"""What every reader shares: reading and checking label files, paths, records.

Every data set reports problems the same way: a :class:`~bundle.data.errors.CXRDataError` that
names the file and the problem (missing columns are listed; an unknown label value is given with
its column and row; duplicate rows are counted, with an example; missing images are counted, with
the first few; image paths that leave the data folder are listed with their rows). Row numbers
count data rows from 1 (the header is not a row); messages also give the line of the file
(line = row + 1). These helpers are internal to the package; its public API is :mod:`bundle.data.readers`.
"""

from __future__ import annotations

import gc
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..datalist import VIEWS
from ..errors import CXRDataError
from ..vocabulary import canonical_finding

__all__ = [
    "MAX_LISTED",
    "Missing",
    "PathLike",
    "Record",
    "attach_boxes",
    "canonical_column",
    "check_choice",
    "check_columns",
    "check_files_exist",
    "check_inside",
    "check_unique",
    "check_values",
    "check_views",
    "describe_row",
    "existing_file",
    "image_root_for",
    "index_folder",
    "join_paths",
    "make_records",
    "missing_files",
    "normalise_view",
    "parse_codes",
    "parse_numbers",
    "raise_missing",
    "read_csv",
    "resolve_by_name",
]

PathLike = str | os.PathLike
Record = dict[str, Any]
Missing = Literal["raise", "keep"]
MAX_LISTED = 5  # how many examples an error message lists


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


def existing_file(path: PathLike) -> Path:
    file = Path(path)
    if not file.is_file():
        raise CXRDataError(file, "file does not exist" if not file.exists() else "is not a file")
    return file


def read_csv(path: Path, required: Iterable[str], *, allow_empty: bool = False, only_required: bool = False,
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
        absent = [c for c in required if c not in found]
        raise CXRDataError(path, f"missing column(s) {absent}; found {found}")
    check_columns(df, required, path)
    if df.empty and not allow_empty:
        raise CXRDataError(path, "no data rows (the file has only its header): no images to train or test on")
    return df.reset_index(drop=True)


def check_columns(df: pd.DataFrame, required: Iterable[str], path: Path) -> None:
    """All missing columns in one error, with the columns the file has."""
    missing = [c for c in dict.fromkeys(required) if c not in df.columns]
    if missing:
        raise CXRDataError(path, f"missing column(s) {missing}; found {list(df.columns)}")


def describe_row(position: int) -> str:
    """Human reference of a 0-based data-row position (the header is line 1)."""
    return f"row {position + 1} (line {position + 2})"


def check_unique(df: pd.DataFrame, columns: list[str], path: Path) -> None:
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
            path,
            f"{int(dup.sum())} duplicate {what}, e.g. {example!r} at {describe_row(first)} and "
            f"{describe_row(i)}",
        )


def parse_codes(
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
                f"unknown label value {str(raw.iloc[i])!r} in column {column!r} at {describe_row(i)}; "
                f"allowed: {allowed_text} ({int(bad.sum())} bad value(s) in this column)",
            )
        out[:, j] = numbers.to_numpy(dtype=float, na_value=np.nan)
    return out


def parse_numbers(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """Numeric columns as float (N, C); blanks are NaN, text is an error with its row."""
    out = np.empty((len(df), len(columns)), np.float64)
    for j, column in enumerate(columns):
        numbers = pd.to_numeric(df[column], errors="coerce")
        bad = df[column].notna() & numbers.isna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = str(df[column].iloc[i])
            raise CXRDataError(path, f"not a number {value!r} in column {column!r} at {describe_row(i)}")
        out[:, j] = numbers.to_numpy(dtype=float, na_value=np.nan)
    return out


def check_values(
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
            f"unknown value {value} in column {column!r} at {describe_row(i)}; "
            f"allowed: {', '.join(map(str, allowed))} ({int(bad.sum())} bad row(s))",
        )
    return stripped


def canonical_column(
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
                path, f"{problem} in column {column!r} at {describe_row(row)}; allowed: {', '.join(allowed)}"
            )
        mapping[name] = canonical
    return stripped.map(mapping)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


def check_views(views: Sequence[str]) -> list[str]:
    views = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; known: {', '.join(VIEWS)}")
    return views


def image_root_for(image_root: PathLike | None, label_file: Path) -> Path:
    return Path(image_root) if image_root is not None else label_file.parent


def join_paths(root: Path, relative: pd.Series | Sequence[str]) -> list[str]:
    """``root/relative`` for relative paths; absolute paths are kept (vectorised)."""
    base = str(root).rstrip("/\\") + os.sep
    # one pass into the final list: pandas' string columns for the joined paths cost 0.1 GiB at CheXpert's size
    return [path if os.path.isabs(path) else base + path for path in map(str, relative)]


def check_inside(root: Path, relative: pd.Series, source: Path, column: str,
                 allow_outside_paths: bool) -> None:
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
            outside.append(f"{value!r} at {describe_row(int(row))}")
    if outside:
        raise CXRDataError(
            source,
            f"{len(outside)} image path(s) in column {column!r} leave the data folder {base}: "
            f"{', '.join(outside[:MAX_LISTED])}{', ...' if len(outside) > MAX_LISTED else ''}; move the "
            f"images inside it, set image_root to a folder that holds them all, or set the dataset option "
            f"allow_outside_paths to true (reader argument allow_outside_paths=True) if they are elsewhere "
            f"on purpose",
        )


def raise_missing(source: Path, root: Path, missing: list[str], total: int) -> None:
    """One error for all missing images: how many, and the first few."""
    where = f"image folder {root} does not exist; " if not root.is_dir() else ""
    raise CXRDataError(
        source, f"{where}{len(missing)} of {total} images do not exist, e.g. {missing[:MAX_LISTED]}"
    )


def check_files_exist(images: Sequence[str], source: Path, root: Path, missing: Missing = "raise") -> None:
    """``missing="raise"``: one error for all missing images; ``"keep"``: nothing (the check reports them)."""
    check_choice("missing", missing, ("raise", "keep"))
    if missing == "keep":
        return
    absent = missing_files(images)
    if absent:
        raise_missing(source, root, absent, len(images))


def missing_files(paths: Iterable[str]) -> list[str]:
    """The paths that are not files; each folder is checked once, not once per file in it."""

    @lru_cache(maxsize=4096)  # bounded: CheXpert has a folder per study (about 190,000); paths come grouped by folder
    def folder_exists(folder: str) -> bool:
        parent = os.path.dirname(folder)
        if parent and parent != folder and not folder_exists(parent):
            return False
        return os.path.isdir(folder)

    return [p for p in paths if not (folder_exists(os.path.dirname(p) or ".") and os.path.isfile(p))]


def index_folder(root: Path) -> dict[str, str]:
    """File name -> path of every file below ``root`` (the first in sorted walk order wins)."""
    index: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            index.setdefault(name, os.path.join(folder, name))
    return index


def resolve_by_name(
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
    check_choice("missing", missing, ("raise", "keep"))
    base = root / "images" if (root / "images").is_dir() else root
    positions = range(len(names)) if rows is None else rows
    written = pd.Series([n + suffixes[0] for n in names], index=positions, dtype="string")
    check_inside(root, written, source, column, allow_outside_paths)
    if not check_files:
        return join_paths(base, [n + suffixes[0] for n in names])
    index = index_folder(root) if root.is_dir() else {}
    images = [next((index[n + s] for s in suffixes if n + s in index), None) for n in names]
    expected = [str(base / (n + suffixes[0])) for n in names]
    absent = [path for path, found in zip(expected, images) if found is None]
    if absent and missing == "raise":
        raise_missing(source, root, absent, len(names))
    return [found if found is not None else path for path, found in zip(expected, images)]


def attach_boxes(records: list[Record], keys: Sequence[str], boxes: Mapping[str, list[Record]]) -> None:
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


def make_records(
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
