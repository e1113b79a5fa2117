"""A recorded teacher: a teacher's outputs read from a predictions file (black-box distillation).

A teacher need not be a network that runs here. A file with one row per image and one column
per class (probabilities or logits) is enough for the soft-label terms: record a big ensemble on
a GPU server, a commercial model or a previous run once, and distil from the file anywhere.
:meth:`bundle.distill.TeacherOutputCache.from_predictions` turns it into the same cache a live
teacher's outputs are kept in, so the soft-label loss treats both alike (probabilities become
logits, which the loss softens by its temperature exactly as a live teacher's).

The file
    CSV (``.csv``, ``.csv.gz``, ``.tsv``) or JSON. Columns:

    * an image id: the first of ``Image Index`` (NIH), ``image`` (this bundle's
      ``predictions.csv``), ``image_id``, ``ImageID``, ``Path``, ``path``, ``filename``, ``file``, ``id``
      (any case), or the one named by ``id_column``;
    * one column per class of the data set, named by the class, with any of the prefixes
      ``prob_``, ``probability_``, ``p_``, ``logit_``, ``score_``, ``pred_`` or suffixes ``_prob``,
      ``_logit``, ``_score``, matched through the vocabulary's synonyms
      (:mod:`bundle.data.vocabulary`): ``prob_Effusion`` and ``Pleural_Effusion`` are the data set's
      "Pleural Effusion", ``Normal`` its "No Finding";
    * anything else (``status``, ``predicted``, ``error``, ``Patient Age`` ...) is ignored; rows
      whose ``status`` is ``error`` (files :class:`~bundle.handlers.PredictionWriter` could not
      read) count as missing.

    JSON: a list of rows (flat, or this bundle's ``predictions.json`` with its ``probabilities``
    dict), or ``{image id: {class: value}}``.

Values
    ``values="auto"`` takes a ``logit_`` / ``prob_`` prefix at its word, else probabilities when
    every value lies in [0, 1], logits otherwise; ``"probabilities"`` / ``"logits"`` state it.
    Probabilities become logits: multi-label ``log(p / (1 - p))``, multi-class ``log(p)`` (softmax
    is blind to a constant), with ``p`` clipped to ``[1e-7, 1 - 1e-7]`` (a file rounded to a few
    decimals holds zeros and ones).

Matching rows to the training images
    By the image's path (absolute, or relative to ``dataset_dir``), else its file name, else its
    name without extension, whichever is unique among the training images; images held in memory
    (MedMNIST) are matched by their record id (``patient_id``, e.g. ``train-17``). Rows of other
    images (the validation and test splits, images not used) are ignored.

Errors (:class:`~bundle.data.errors.CXRDataError`, naming the file), raised before training
    Class columns that are not the data set's classes (both sets listed); no id column; values that
    are not numbers; stated probabilities outside [0, 1]; two rows for one image; training images
    without a row (counted, a few listed), unless ``missing="skip"``: then the soft term leaves
    those images out (masked, as unknown labels are).

Config (every stage; ``teacher_predictions`` replaces a teacher checkpoint)::

    "teacher_predictions": "../shared/data/nih14_subset/teacher_predictions/chexnet_densenet121.csv",
    "teacher_predictions_values": "auto",
    "teacher_predictions_missing": "error"
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..console import progress
from ..data.errors import CXRDataError
from ..data.vocabulary import SYNONYMS, normalise_name

__all__ = ["read_teacher_predictions", "record_id", "ID_COLUMNS", "VALUE_KINDS", "MISSING_POLICIES"]

ID_COLUMNS = ("Image Index", "image", "image_id", "ImageID", "Path", "path", "filename", "file", "id")
VALUE_KINDS = ("auto", "probabilities", "logits")
MISSING_POLICIES = ("error", "skip")
EPSILON = 1e-7
_LISTED = 5
_PREFIX = re.compile(r"^(?P<kind>prob|probability|p|logit|logits|score|pred)[_\s]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[_\s]+(?P<kind>prob|probability|logit|logits|score)$", re.IGNORECASE)
_AMBIGUOUS = -1


def record_id(record: Mapping[str, Any]) -> str:
    """The id a predictions file names a record by: its image path, or for in-memory images its ``patient_id``."""
    image = record.get("image")
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return str(record.get("id", record.get("patient_id", "")))


def _class_key(column: str) -> tuple[str, str | None]:
    """``prob_Pleural_Effusion`` -> (``pleural effusion``, ``probabilities``): the look-up key and the stated kind."""
    name, kind = str(column).strip(), None
    for pattern in (_PREFIX, _SUFFIX):
        match = pattern.search(name)
        if match:
            kind = "logits" if match["kind"].lower().startswith("logit") else "probabilities"
            name = pattern.sub("", name)
    key = normalise_name(name)
    return SYNONYMS.get(key, key), kind


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CXRDataError(path, "teacher predictions file not found")
    try:
        if path.suffix.lower() == ".json":
            content = json.loads(path.read_text())
            if isinstance(content, Mapping):  # {image: {class: value}}
                return pd.DataFrame([{"image": k, **dict(v)} for k, v in content.items()])
            rows = [{**{k: v for k, v in row.items() if k != "probabilities"}, **dict(row.get("probabilities") or {})}
                    for row in content]
            return pd.DataFrame(rows)
        # as text: a bad cell is quoted as written ('n/a', ''), not as the NaN pandas would make of it
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    except (ValueError, OSError, AttributeError, TypeError, pd.errors.ParserError) as error:
        raise CXRDataError(path, f"cannot be read as a predictions table: {error}") from None


def _id_column(df: pd.DataFrame, path: Path, id_column: str | None) -> str:
    if id_column is not None:
        if id_column not in df.columns:
            raise CXRDataError(path, f"no id column {id_column!r}; columns: {list(df.columns)}")
        return id_column
    lower = {str(c).lower(): c for c in df.columns}
    for name in ID_COLUMNS:
        if name.lower() in lower:
            return lower[name.lower()]
    raise CXRDataError(path, f"no image id column (looked for {', '.join(ID_COLUMNS)}); columns: {list(df.columns)}")


def _class_columns(df: pd.DataFrame, path: Path, id_col: str, class_names: Sequence[str]
                   ) -> tuple[list[str], str | None]:
    """The file's column for each data set class, in the data set's order, and the kind the names state."""
    wanted = {SYNONYMS.get(normalise_name(c), normalise_name(c)): c for c in class_names}
    found: dict[str, str] = {}
    foreign: list[str] = []
    kinds: set[str] = set()
    for column in df.columns:
        if column == id_col:
            continue
        key, kind = _class_key(column)
        if key in wanted:
            if wanted[key] in found:
                raise CXRDataError(path, f"two columns for class {wanted[key]!r}: {found[wanted[key]]!r} and {column!r}")
            found[wanted[key]] = str(column)
            kinds.update([kind] if kind else [])
        elif kind is not None or key in SYNONYMS.values():  # a class column, but of classes the data set lacks
            foreign.append(str(column))
    missing = [c for c in class_names if c not in found]
    if missing or foreign:
        raise CXRDataError(
            path, f"class columns do not match the data set's classes: the file has "
                  f"{sorted(found.values()) + foreign}, the data set has {list(class_names)}"
                  + (f" (no column for {missing})" if missing else "")
                  + (f" (not in the data set: {foreign})" if foreign else ""))
    if len(kinds) > 1:
        raise CXRDataError(path, "the column names mix probabilities and logits (prob_... and logit_...)")
    return [found[c] for c in class_names], (kinds.pop() if kinds else None)


def _values(df: pd.DataFrame, columns: list[str], path: Path, stated: str | None, values: str) -> tuple[np.ndarray, str]:
    numbers = df[columns].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise CXRDataError(path, f"row {row + 1} (line {row + 2}), column {columns[col]!r}: "
                                 f"{df[columns[col]].iloc[row]!r} is not a number ({int(bad.any(axis=1).sum())} rows)")
    array = numbers.to_numpy(np.float64)
    inside = bool(((array >= 0) & (array <= 1)).all())
    kind = values if values != "auto" else (stated or ("probabilities" if inside else "logits"))
    if kind == "probabilities" and not inside:
        raise CXRDataError(path, f"values are stated as probabilities but lie in [{array.min():.4g}, {array.max():.4g}]"
                                 f"; set teacher_predictions_values to 'logits' if they are logits")
    return array, kind


def _as_logits(array: np.ndarray, kind: str, task: str) -> np.ndarray:
    if kind == "logits":
        return array.astype(np.float32)
    p = np.clip(array, EPSILON, 1.0 - EPSILON)
    logits = np.log(p) if task == "multiclass" else np.log(p) - np.log1p(-p)
    return logits.astype(np.float32)


def _record_index(records: Sequence[Mapping[str, Any]], dataset_dir: str | os.PathLike | None
                  ) -> list[dict[str, int]]:
    """Look-up tables id -> record position: by path, by path relative to ``dataset_dir``, by name, by stem."""
    tables: list[dict[str, int]] = [{}, {}, {}, {}]
    root = os.path.abspath(dataset_dir) if dataset_dir else None
    for position, record in enumerate(records):
        rid = record_id(record)
        full = os.path.normpath(os.path.abspath(rid)) if isinstance(record.get("image"), (str, os.PathLike)) else rid
        name = os.path.basename(rid)
        keys = [full, os.path.relpath(full, root) if root and full.startswith(root) else None, name,
                name.split(".")[0] if "." in name else None]
        for table, key in zip(tables, keys):
            if key is not None:
                table[key] = _AMBIGUOUS if key in table and table[key] != position else position
    return tables


def _match(row_id: str, tables: list[dict[str, int]]) -> int | None:
    candidates = [os.path.normpath(os.path.abspath(row_id)) if os.path.isabs(row_id) else row_id,
                  os.path.normpath(row_id), os.path.basename(row_id), os.path.basename(row_id).split(".")[0]]
    for table, key in zip(tables, candidates):
        position = table.get(key)
        if position is not None and position != _AMBIGUOUS:
            return position
    return None


def read_teacher_predictions(
    path: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    task: str,
    values: str = "auto",
    missing: str = "error",
    dataset_dir: str | os.PathLike | None = None,
    id_column: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, K) float32, available (N,) bool)`` of ``records`` from the predictions file at ``path``.

    See the module docstring for the format, the matching and the errors. Unavailable rows' logits are 0.
    """
    path = Path(path)
    if values not in VALUE_KINDS:
        raise ValueError(f"teacher_predictions_values must be one of {VALUE_KINDS}, got {values!r}")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"teacher_predictions_missing must be one of {MISSING_POLICIES}, got {missing!r}")
    if task not in ("multilabel", "multiclass"):
        raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
    df = _read_table(path)
    id_col = _id_column(df, path, id_column)
    if "status" in df.columns:  # this bundle's predictions.csv: files it could not read have no values
        df = df[df["status"].astype(str).str.strip().str.lower() != "error"]
    columns, stated = _class_columns(df, path, id_col, class_names)
    array, kind = _values(df, columns, path, stated, values)
    logits = _as_logits(array, kind, task)

    tables = _record_index(records, dataset_dir)
    result = np.zeros((len(records), len(class_names)), np.float32)
    available = np.zeros(len(records), bool)
    row_ids = df[id_col].astype(str).str.strip()
    for row, row_id in enumerate(progress(row_ids, f"matching {path.name} to the training images", total=len(df),
                                          unit="rows")):
        position = _match(row_id, tables)
        if position is None:
            continue  # an image of another split, or one the data set does not use
        if available[position]:
            raise CXRDataError(path, f"two rows for training image {record_id(records[position])} "
                                     f"(the second at row {row + 1})")
        result[position], available[position] = logits[row], True
    absent = [record_id(records[i]) for i in np.flatnonzero(~available)]
    if not available.any() and len(records):
        raise CXRDataError(path, f"no row matches a training image: the file names images like "
                                 f"{df[id_col].astype(str).head(2).tolist()}, the training list holds images like "
                                 f"{[record_id(r) for r in records[:2]]}")
    if absent and missing == "error":
        raise CXRDataError(path, f"no teacher prediction for {len(absent)} of {len(records)} training images, e.g. "
                                 f"{', '.join(absent[:_LISTED])}: record them too, or set "
                                 f"teacher_predictions_missing to 'skip' to leave them out of the soft-label term")
    return result, available
