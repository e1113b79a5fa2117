"""Data-set checks: find every bad record before training starts, not at image 10,000.

``check_records`` walks a datalist and collects one :class:`DataProblem` per bad
record (missing or empty file, label vector of the wrong length, label values
other than 0/1, and, in ``"full"`` mode, images that do not decode or are too
small); ``check_splits`` runs it on train / validation / test and raises a single
:class:`CXRDataError` that lists them all, or (``skip_bad=True``) drops the bad
records and logs them. The training configs call it in ``initialize``
(``check_data``, ``skip_bad_records``); ``mode="off"`` skips it.
``scripts/check_dataset.py`` runs the same check from the command line.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .errors import CXRDataError, DataProblem
from .io import array_to_cxr, load_cxr

__all__ = ["check_records", "check_splits", "find_split_problems", "write_problems_csv", "CHECK_MODES"]

CHECK_MODES = ("off", "quick", "full")
logger = logging.getLogger(__name__)


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

    Args: as :func:`indexed_problems`.
    """
    return [problem for _, problem in indexed_problems(records, num_classes, mode, require_chest, min_size, num_threads)]


def indexed_problems(
    records: Sequence[dict[str, Any]],
    num_classes: int,
    mode: str = "quick",
    require_chest: bool = True,
    min_size: int = 16,
    num_threads: int = 4,
) -> list[tuple[int, DataProblem]]:
    """``(record index, problem)`` for all problems of a datalist, in record order.

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
        per_record = list(pool.map(check_one, enumerate(records)))
    return [(index, problem) for index, found in enumerate(per_record) for problem in found]


def find_split_problems(
    splits: Any, mode: str = "quick", require_chest: bool = True, min_size: int = 16
) -> list[tuple[str, int, DataProblem]]:
    """``(split, record index, problem)`` for every problem of train / validation / test."""
    return [(name, index, problem) for name in ("train", "validation", "test")
            for index, problem in indexed_problems(getattr(splits, name), splits.num_classes, mode, require_chest,
                                                   min_size)]


def write_problems_csv(path: str | os.PathLike, problems: Sequence[tuple[str, int, DataProblem]]) -> None:
    """One row per problem: split, record index, file (or record), problem."""
    rows = [{"split": split, "index": index, "file": problem.path or "", "problem": problem.problem}
            for split, index, problem in problems]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["split", "index", "file", "problem"])
        writer.writeheader()
        writer.writerows(rows)


def check_splits(
    splits: Any,
    mode: str = "quick",
    require_chest: bool = True,
    min_size: int = 16,
    show: int = 20,
    skip_bad: bool = False,
    report_file: str | os.PathLike | None = None,
) -> Any:
    """Check train / validation / test of a :class:`~bundle.data.sources.DataSplits`.

    Returns the splits when every record is usable, so that a config can chain it.
    Otherwise, with ``skip_bad=False``, raises one :class:`CXRDataError` listing every
    problem; with ``skip_bad=True``, removes the bad records from the splits (in place),
    logs how many, and goes on. Either way ``report_file`` (CSV) lists them all.
    """
    problems = find_split_problems(splits, mode, require_chest, min_size)
    if not problems:
        return splits
    if report_file is not None:
        write_problems_csv(report_file, problems)
    where = f" (all of them in {report_file})" if report_file is not None else ""
    lines = [f"  [{split}] {problem}" for split, _, problem in problems[:show]]
    more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
    if not skip_bad:
        raise CXRDataError(
            None,
            f"data set check found {len(problems)} problem(s) before training{where}:\n" + "\n".join(lines) + more
            + "\nFix or remove these records, set skip_bad_records to true to train without them, "
            "or set check_data to 'off' to skip the check.",
        )
    for name in ("train", "validation", "test"):
        bad = {index for split, index, _ in problems if split == name}
        records = getattr(splits, name)
        records[:] = [record for index, record in enumerate(records) if index not in bad]
    logger.warning("skipped %d bad record(s)%s:\n%s%s", len({(s, i) for s, i, _ in problems}), where,
                   "\n".join(lines), more)
    if not splits.train:
        raise CXRDataError(None, "no usable training records are left after skipping the bad ones")
    return splits
