"""Data-set checks: find every bad record before training starts, not at image 10,000.

``check_records`` walks a datalist and collects every :class:`DataProblem` of every
record: label vectors of the wrong length or with values other than 0/1, and the image
file: missing, a directory, a dangling or looping symbolic link, a named pipe, socket
or device (described from ``stat``, never opened), empty, of a format the loader does
not read (``"quick"`` mode: names without an image extension are sniffed, 132 bytes),
and in ``"full"`` mode every image decoded by the loader (truncated, undecodable, too
small, constant, not a chest radiograph ...). ``check_splits`` runs it on train /
validation / test and raises a single :class:`CXRDataError` that lists them all, or
(``skip_bad=True``) drops the bad records, logs them and writes them to
``data_problems.csv``; :class:`SkippedRecordsLog` appends the records that only fail
when training loads them. The training configs call it in ``initialize``
(``check_data``, ``skip_bad_records``); ``mode="off"`` skips it.
``scripts/check_dataset.py`` runs the same check from the command line.
"""

from __future__ import annotations

import collections
import csv
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..console import progress
from ..keys import Keys
from .errors import CXRDataError, DataProblem
from ..console import process_rank
from .io import IMAGE_EXTENSIONS, array_to_cxr, image_format, load_cxr, path_problem, set_load_advice

__all__ = ["check_records", "check_splits", "class_warnings", "find_split_problems", "full_check_advice",
           "write_problems_csv", "SkippedRecordsLog", "CHECK_MODES", "MIN_CLASS_IMAGES", "REPORT_COLUMNS"]

CHECK_MODES = ("off", "quick", "full")
REPORT_COLUMNS = ["split", "index", "file", "problem"]
MIN_CLASS_IMAGES = 5  # fewer positive images than this: a class nothing can be learnt or measured on
logger = logging.getLogger(__name__)


def _osa_distance(a: str, b: str) -> int:
    """Edit distance with adjacent transpositions (optimal string alignment): ``pnuemonia`` -> ``pneumonia`` is 1."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _folded(name: str) -> str:
    return " ".join(str(name).replace("_", " ").replace("-", " ").lower().split())


def _near_duplicate(a: str, b: str) -> str | None:
    """Why two class names look like one class written twice, or None."""
    if _folded(a) == _folded(b):
        return "differ only in case, spaces, underscores or hyphens"
    distance = _osa_distance(_folded(a), _folded(b))
    allowed = 1 if min(len(a), len(b)) < 10 else 2  # short names: one typo; longer ones: two
    if min(len(a), len(b)) >= 4 and distance <= allowed:
        return f"differ by {distance} edit{'s' if distance > 1 else ''} (a typo?)"
    return None


def _class_rows(splits: Any, task: str) -> tuple[dict[int, list[tuple[str, int, Any]]], list[int]]:
    """Per class index, its positive records as ``(split, index, image)``, and the count of each class."""
    num_classes = splits.num_classes
    rows: dict[int, list[tuple[str, int, Any]]] = {c: [] for c in range(num_classes)}
    for name in ("train", "validation", "test"):
        for index, record in enumerate(getattr(splits, name)):
            label = np.asarray(record.get("label", []), dtype=np.float64)
            mask = np.asarray(record.get("label_mask", np.ones_like(label)), dtype=np.float64)
            if label.shape != (num_classes,):
                continue  # the record check reports it
            known = label * (mask if mask.shape == label.shape else 1.0)
            positive = [int(np.argmax(label))] if task == "multiclass" and label.any() else np.flatnonzero(known > 0)
            for c in positive:
                rows[int(c)].append((name, index, record.get("image")))
    return rows, [len(rows[c]) for c in range(num_classes)]


def _where(entries: Sequence[tuple[str, int, Any]], show: int = 5) -> str:
    described = [f"[{split} #{index}] {image if isinstance(image, (str, os.PathLike)) else 'in-memory image'}"
                 for split, index, image in entries[:show]]
    return "; ".join(described) + (f"; ... and {len(entries) - show} more" if len(entries) > show else "")


def class_warnings(splits: Any, min_images: int = MIN_CLASS_IMAGES) -> list[str]:
    """Warnings about the classes of a data set that look like mistakes in its label file, with their rows:

    * two class names that are near-duplicates of each other (the same but for case, spaces, underscores or
      hyphens, or one or two edits apart: ``pnuemonia`` beside ``pneumonia``), which a reader takes for two
      classes; the rows of the rarer one are named;
    * a class with fewer than ``min_images`` positive images over all splits: too few to learn it, and its
      AUC and decision threshold on validation and test are undefined or noise.
    """
    names = [str(c) for c in splits.class_names]
    rows, counts = _class_rows(splits, getattr(splits, "task", "multilabel"))
    warnings_found = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            why = _near_duplicate(names[i], names[j])
            if why is None:
                continue
            rare, common = (i, j) if counts[i] <= counts[j] else (j, i)
            warnings_found.append(
                f"class names {names[rare]!r} ({counts[rare]} image{'s' if counts[rare] != 1 else ''}) and "
                f"{names[common]!r} ({counts[common]} images) {why}: if they are one class, correct the label file; "
                f"rows of {names[rare]!r}: {_where(rows[rare])}")
    for c, name in enumerate(names):
        if counts[c] < min_images:
            warnings_found.append(
                f"class {name!r} has {counts[c]} positive image{'s' if counts[c] != 1 else ''} (fewer than "
                f"{min_images}): too few to learn it or to measure it"
                + (f"; its rows: {_where(rows[c])}" if rows[c] else ""))
    return warnings_found


def full_check_advice(dataset: str | None, dataset_dir: str | os.PathLike | None,
                      options: dict[str, Any] | None = None, check_data: str = "quick") -> str:
    """What to do about an image that fails to decode in training, with the exact command that lists every such
    image of ``dataset`` at once (``check_data`` ``quick`` only looks at what each file is, not inside it)."""
    from ..handlers.summary import python_command, shell_quote

    words = [python_command(), "scripts/check_dataset.py", "--dataset", str(dataset)]
    if dataset_dir is not None:
        words += ["--dataset_dir", str(dataset_dir)]
    if options:
        words += ["--options", repr(dict(options))]
    words += ["--mode", "full"]
    rerun = "" if check_data == "full" else " (or rerun training with --check_data full, which decodes every image " \
                                            "before the first epoch and stops with the whole list)"
    return ("Fix or remove this file; to list every image of the data set that cannot be read, at once: "
            + " ".join(shell_quote(w) for w in words) + rerun
            + "; --skip_bad_records True trains without them.")


CHECK_CHUNK = 256  # records a thread checks at a time


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
    problem = path_problem(image)  # what the entry is, from stat: never opens a pipe or device
    if problem is not None:
        return [DataProblem(image, problem)]
    try:
        if mode == "full":
            load_cxr(image, require_chest=require_chest, min_size=min_size)
        elif not str(image).lower().endswith(IMAGE_EXTENSIONS):
            image_format(image)  # a name without an image extension: is its content one?
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

    def check_chunk(start: int) -> list[list[DataProblem]]:
        return [check_one((index, records[index])) for index in range(start, min(start + CHECK_CHUNK, len(records)))]

    def in_order(pool: ThreadPoolExecutor):
        # chunks, not one task a record: 112,120 pending futures took about 1.2 kB a record at NIH's size
        for found in pool.map(check_chunk, range(0, len(records), CHECK_CHUNK)):
            yield from found

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        per_record = list(progress(in_order(pool), f"checking {len(records):,} records ({mode})", total=len(records),
                                   unit="records"))
    return [(index, problem) for index, found in enumerate(per_record) for problem in found]


def find_split_problems(
    splits: Any, mode: str = "quick", require_chest: bool = True, min_size: int = 16
) -> list[tuple[str, int, DataProblem]]:
    """``(split, record index, problem)`` for every problem of train / validation / test."""
    return [(name, index, problem) for name in ("train", "validation", "test")
            for index, problem in indexed_problems(getattr(splits, name), splits.num_classes, mode, require_chest,
                                                   min_size)]


def write_problems_csv(path: str | os.PathLike, problems: Sequence[tuple[str, int, DataProblem]]) -> None:
    """One row per problem: split, record index, file (or record), problem (written atomically)."""
    rows = [{"split": split, "index": index, "file": problem.path or "", "problem": problem.problem}
            for split, index, problem in problems]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def problem_kinds(problems: Sequence[tuple[str, int, DataProblem]]) -> list[tuple[str, int]]:
    """How many problems of each kind (the text before the first ':' or ';'), most frequent first."""
    counts = collections.Counter(problem.problem.split(":")[0].split(";")[0].split(" (")[0].strip()
                                 for _, _, problem in problems)
    return counts.most_common()


def check_splits(
    splits: Any,
    mode: str = "quick",
    require_chest: bool = True,
    min_size: int = 16,
    show: int = 20,
    skip_bad: bool = False,
    report_file: str | os.PathLike | None = None,
    dataset: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    dataset_options: dict[str, Any] | None = None,
) -> Any:
    """Check train / validation / test of a :class:`~bundle.data.sources.DataSplits`.

    Returns the splits when every record is usable, so that a config can chain it.
    Otherwise, with ``skip_bad=False``, raises one :class:`CXRDataError` listing every
    problem; with ``skip_bad=True``, removes the bad records from the splits (in place),
    logs how many, and goes on. Either way ``report_file`` (CSV) lists them all.

    Also logs :func:`class_warnings` (near-duplicate class names, classes with too few images; they do not
    stop training), and, given ``dataset`` (and ``dataset_dir``, ``dataset_options``), makes the advice of an
    image that fails to decode later in the run name the exact command that lists all of them
    (:func:`full_check_advice`).
    """
    source = getattr(splits, "source", None)
    if dataset is not None:
        set_load_advice(full_check_advice(dataset, dataset_dir, dataset_options, mode))
    if mode != "off" and process_rank() == 0:
        for warning in class_warnings(splits):
            logger.warning("%s: %s", source or "data set", warning)
    problems = find_split_problems(splits, mode, require_chest, min_size)
    if not problems:
        if report_file is not None and os.path.isfile(report_file):
            os.remove(report_file)  # a report of an earlier run would describe problems that are gone
        return splits
    if report_file is not None:
        write_problems_csv(report_file, problems)
    where = f" (all of them in {report_file})" if report_file is not None else ""
    lines = [f"  [{split}] {problem}" for split, _, problem in problems[:show]]
    more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
    records = len({(split, index) for split, index, _ in problems})
    kinds = ", ".join(f"{count} {kind}" for kind, count in problem_kinds(problems))
    if not skip_bad:
        raise CXRDataError(
            source,
            f"data set check found {len(problems)} problem(s) in {records} record(s) before training "
            f"({kinds})"
            f"{where}:\n" + "\n".join(lines) + more
            + "\nFix or remove these records, set skip_bad_records to true to train without them, "
            "or set check_data to 'off' to skip the check.",
        )
    for name in ("train", "validation", "test"):
        bad = {index for split, index, _ in problems if split == name}
        kept = getattr(splits, name)
        kept[:] = [record for index, record in enumerate(kept) if index not in bad]
    logger.warning("skipped %d bad record(s) (%s)%s:\n%s%s", records, kinds, where, "\n".join(lines), more)
    for name in ("train", "validation"):
        if not getattr(splits, name):
            raise CXRDataError(source, f"no usable {name} records are left after skipping the bad ones"
                                       f"{where}")
    return splits


class SkippedRecordsLog:
    """Ignite handler: append every record an engine skipped while loading it to ``data_problems.csv``.

    With ``skip_bad_records`` the loader records a problem instead of raising
    (``LoadCXRd(on_error="record")``) and the engines leave the sample out of its batch; a file
    the pre-training check did not decode (``check_data: quick``) is found only then. This
    handler gives such records a row of the same report the check wrote (split, index in the
    split, file, problem), each once per run, when the iteration that skipped it completes.

    Args:
        report_file: the check's report (``<output_dir>/data_problems.csv``); created if absent.
        records: the split's records, to name the file and its index.
        split: "train" or "validation" (the report's ``split`` column).
        error_key: the batch key of the loader's problems.
    """

    def __init__(self, report_file: str | os.PathLike, records: Sequence[dict[str, Any]], split: str,
                 error_key: str = Keys.ERROR) -> None:
        self.report_file, self.split, self.error_key = os.fspath(report_file), split, error_key
        self._index = {str(record.get(Keys.IMAGE)): i for i, record in enumerate(records)
                       if isinstance(record.get(Keys.IMAGE), (str, os.PathLike))}
        self._written: set[str] = set()

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._read_report)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _read_report(self, engine: Any = None) -> None:
        if os.path.isfile(self.report_file):
            with open(self.report_file, newline="") as stream:
                rows = csv.DictReader(stream)
                self._written = {row["file"] for row in rows if row.get("split") == self.split}

    def _split_error(self, error: str) -> tuple[str, str]:
        """(file, problem) of a loader message ``"<file>: <problem>"``; a file name may hold ': ' itself."""
        for cut in (i for i in range(len(error)) if error.startswith(": ", i)):
            if error[:cut] in self._index:
                return error[:cut], error[cut + 2:]
        file, _, problem = error.partition(": ")
        return file, problem

    def __call__(self, engine: Any) -> None:
        batch = engine.state.batch
        errors = batch.get(self.error_key) if isinstance(batch, dict) else None
        if not errors:
            return
        rows = []
        for error in errors:
            if not error:
                continue
            file, problem = self._split_error(str(error))
            if file in self._written:
                continue
            self._written.add(file)
            index = self._index.get(file, "")
            rows.append({"split": self.split, "index": index, "file": file, "problem": problem})
        if not rows:
            return
        new = not os.path.isfile(self.report_file)
        os.makedirs(os.path.dirname(os.path.abspath(self.report_file)), exist_ok=True)
        with open(self.report_file, "a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=REPORT_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
