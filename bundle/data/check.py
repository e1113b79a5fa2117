"""Data-set checks: find every bad record before training starts, not at image 10,000.

``check_records`` walks a datalist and collects one :class:`DataProblem` per bad
record (missing or empty file, label vector of the wrong length, label values
other than 0/1, and, in ``"full"`` mode, images that do not decode or are too
small); ``check_splits`` runs it on train / validation / test and raises a single
:class:`CXRDataError` that lists them all. The training configs call it in
``initialize``; ``mode="off"`` skips it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .errors import CXRDataError, DataProblem
from .io import array_to_cxr, load_cxr

__all__ = ["check_records", "check_splits", "CHECK_MODES"]

CHECK_MODES = ("off", "quick", "full")


def _check_labels(record: dict[str, Any], num_classes: int, where: str) -> list[DataProblem]:
    problems = []
    for key in ("label", "label_mask"):
        values = np.asarray(record.get(key, []), dtype=np.float64)
        if values.shape != (num_classes,):
            problems.append(DataProblem(where, f"{key} has {values.size} values, expected {num_classes}"))
        elif not np.isin(values, (0.0, 1.0)).all():
            problems.append(DataProblem(where, f"{key} has values other than 0/1: {sorted(set(values.tolist()))}"))
    return problems


def _check_image(image: Any, where: str, mode: str, require_chest: bool, min_size: int) -> list[DataProblem]:
    if not isinstance(image, (str, os.PathLike)):
        try:
            array_to_cxr(np.asarray(image), min_size=min_size, source=where)
        except CXRDataError as error:
            return [DataProblem(error.path, error.problem)]
        return []
    if not os.path.exists(image):
        return [DataProblem(image, "file does not exist")]
    if os.path.isfile(image) and os.path.getsize(image) == 0:
        return [DataProblem(image, "empty file (0 bytes)")]
    if mode == "full":
        try:
            load_cxr(image, require_chest=require_chest, min_size=min_size)
        except CXRDataError as error:
            return [DataProblem(error.path, error.problem)]
    return []


def check_records(
    records: Sequence[dict[str, Any]],
    num_classes: int,
    mode: str = "quick",
    require_chest: bool = True,
    min_size: int = 16,
    num_threads: int = 4,
) -> list[DataProblem]:
    """All problems of a datalist, in record order.

    Args:
        records: datalist records (``image``, ``label``, ``label_mask``).
        num_classes: expected length of the label vectors.
        mode: ``"quick"`` checks that files exist and are not empty; ``"full"`` also
            decodes every image (slow for large sets); ``"off"`` checks nothing.
        require_chest: passed to :func:`bundle.data.load_cxr` in full mode.
        min_size: smallest accepted image side, in pixels.
        num_threads: parallel file checks (I/O bound).
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"check mode must be one of {CHECK_MODES}, got {mode!r}")
    if mode == "off":
        return []

    def check_one(index_record: tuple[int, dict[str, Any]]) -> list[DataProblem]:
        index, record = index_record
        image = record.get("image")
        where = image if isinstance(image, (str, os.PathLike)) else f"record {index} ({record.get('patient_id', '?')})"
        if image is None:
            return [DataProblem(where, "record has no 'image'")]
        return _check_labels(record, num_classes, str(where)) + _check_image(image, str(where), mode, require_chest, min_size)

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        return [problem for found in pool.map(check_one, enumerate(records)) for problem in found]


def check_splits(
    splits: Any,
    mode: str = "quick",
    require_chest: bool = True,
    min_size: int = 16,
    show: int = 20,
) -> Any:
    """Check train / validation / test of a :class:`~bundle.data.sources.DataSplits`.

    Returns the splits unchanged when every record is usable, so that a config can
    chain it; raises one :class:`CXRDataError` listing every problem otherwise.
    """
    problems: list[tuple[str, DataProblem]] = []
    for name in ("train", "validation", "test"):
        found = check_records(getattr(splits, name), splits.num_classes, mode, require_chest, min_size)
        problems += [(name, problem) for problem in found]
    if problems:
        lines = [f"  [{split}] {problem}" for split, problem in problems[:show]]
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise CXRDataError(
            None,
            f"data set check found {len(problems)} problem(s) before training:\n" + "\n".join(lines) + more
            + "\nFix or remove these records, or set check_data to 'off' to skip the check.",
        )
    return splits
