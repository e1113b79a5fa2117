"""Patient-level splits: no patient's images in two splits.

:func:`patient_split` assigns whole patients to splits with a seeded greedy algorithm, a
group-aware version of iterative stratification (Sechidis et al. 2011):

1. Each patient gets a class-count vector: per class, how many of its images are positive
   (one-hot labels for multiclass, known positives for multilabel), plus one count for its
   images with no positive finding. ``stratify=False`` uses no classes, only image counts.
2. Patients are taken by decreasing image count (a seeded shuffle orders patients of the same
   size), so big patients are placed while there is room for them.
3. Each patient goes to the split that most lacks what it brings: the split's relative image
   deficit ``(f_s N - n_s) / N`` plus, for each of the patient's classes, the class count times
   that split's relative deficit of the class ``(f_s T_j - n_sj) / T_j``.
4. If a split with a non-zero fraction ended up empty (tiny data sets), it takes the smallest
   patient of the split with the most patients.

Fractions are met by *image* count, approximately (whole patients move), and the class mix of
every split follows the overall one. The result depends only on the patient ids, labels and
the seed (patient ids are sorted before the shuffle, so record order does not matter); each
split keeps the records in their original order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from .datalist import Datalist
from .errors import CXRDataError

__all__ = ["DEFAULT_FRACTIONS", "patient_split", "patients_in_several_splits", "split_from_official"]

DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType({"train": 0.7, "validation": 0.1, "test": 0.2})
Record = dict[str, Any]


def patient_split(
    records: Sequence[Record] | Datalist,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, list[Record]]:
    """Split records by patient into ``fractions`` (by image count), deterministically for a seed.

    Args:
        records: datalist records (or a :class:`Datalist`); each needs ``patient_id``, and
            ``label`` (and optionally ``label_mask``) when ``stratify``.
        fractions: split name -> fraction (non-negative, summing to 1).
        seed: seed of the tie-breaking shuffle.
        stratify: balance the classes across splits (see the module docstring).

    Returns:
        split name -> records, in the order of ``fractions``; no patient in two splits.
    """
    records = list(records.records if isinstance(records, Datalist) else records)
    names, targets = _check_fractions(fractions)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        pid = record.get("patient_id")
        if pid is None or str(pid) == "":
            image = record.get("image")
            raise CXRDataError(None, f"record {i} ({image!r}) has no patient_id: cannot split by patient")
        by_patient[str(pid)].append(i)
    patients = sorted(by_patient)
    if stratify and records:
        counts = _class_counts(records, patients, by_patient)
    else:
        counts = np.zeros((len(patients), 0))
    sizes = np.array([len(by_patient[p]) for p in patients], dtype=float)

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(patients))
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]  # big patients first, seeded ties
    assigned: dict[str, list[str]] = {name: [] for name in names}
    for k, j in zip(order.tolist(), _greedy(counts[order], sizes[order], targets)):
        assigned[names[j]].append(patients[k])
    _fill_empty_splits(assigned, names, targets, by_patient)

    out: dict[str, list[Record]] = {}
    for name in names:
        rows = sorted(i for p in assigned[name] for i in by_patient[p])
        out[name] = [records[i] for i in rows]
    return out


def split_from_official(
    datalist: Datalist, validation_fraction: float = 0.1, seed: int = 0, stratify: bool = True
) -> dict[str, list[Record]]:
    """Train / validation / test from a data set's official split, carving validation by patient.

    ``datalist.splits`` must have "train" (NIH's train_val list, CheXpert's train.csv, ...);
    ``validation_fraction`` of its images (by patient, see :func:`patient_split`) become
    "validation"; every other official split (e.g. "test") is kept as it is. A datalist that
    already has a "validation" split is returned unchanged (as a new dict).
    """
    if "train" not in datalist.splits:
        raise CXRDataError(
            None, f"no official 'train' split to carve validation from; splits: {sorted(datalist.splits)}"
        )
    if "validation" in datalist.splits:
        return dict(datalist.splits)
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), not {validation_fraction}")
    parts = patient_split(
        datalist.splits["train"],
        {"train": 1.0 - validation_fraction, "validation": validation_fraction},
        seed,
        stratify,
    )
    others = {name: records for name, records in datalist.splits.items() if name != "train"}
    return {"train": parts["train"], "validation": parts["validation"], **others}


def patients_in_several_splits(splits: Mapping[str, Iterable[Record]]) -> dict[str, list[str]]:
    """Patient id -> the split names it appears in, for every patient found in more than one."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, records in splits.items():
        for record in records:
            seen[str(record["patient_id"])].add(name)
    return {pid: sorted(names) for pid, names in seen.items() if len(names) > 1}


def _check_fractions(fractions: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names = list(fractions)
    values = np.array([float(fractions[n]) for n in names])
    if not names or (values < 0).any() or abs(values.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, not {dict(fractions)}")
    return names, values


def _greedy(counts: np.ndarray, sizes: np.ndarray, targets: np.ndarray) -> list[int]:
    """Split index per patient (in the given order): the split that most lacks the patient's classes.

    Score of split s for a patient with class counts c: its relative image deficit
    ``(f_s N - n_s) / N`` plus ``sum_j c_j (f_s T_j - n_sj) / T_j`` over the patient's
    classes (N images, T_j images of class j in all; n_* assigned so far). Plain Python on
    sparse counts: tens of thousands of patients take well under a second.
    """
    total = float(sizes.sum()) or 1.0
    class_total = np.maximum(counts.sum(axis=0), 1.0).tolist()
    splits = [s for s in range(len(targets)) if targets[s] > 0]
    f = targets.tolist()
    have_images = [0.0] * len(f)
    have_class = [[0.0] * counts.shape[1] for _ in f]
    rows, cols = np.nonzero(counts)
    starts = np.searchsorted(rows, np.arange(len(counts) + 1)).tolist()
    cols_l, vals_l = cols.tolist(), counts[rows, cols].tolist()
    out = []
    for k, size in enumerate(sizes.tolist()):
        nz = range(starts[k], starts[k + 1])
        best, best_score = splits[0], -np.inf
        for s in splits:
            score = f[s] - have_images[s] / total
            hc = have_class[s]
            for i in nz:
                j = cols_l[i]
                score += vals_l[i] * (f[s] - hc[j] / class_total[j])
            if score > best_score:
                best, best_score = s, score
        out.append(best)
        have_images[best] += size
        hc = have_class[best]
        for i in nz:
            hc[cols_l[i]] += vals_l[i]
    return out


def _class_counts(
    records: list[Record], patients: list[str], by_patient: Mapping[str, list[int]]
) -> np.ndarray:
    """(patients, classes + 1): per patient, images positive for each class, then images with none.

    Multiclass (one-hot) labels count their class; multilabel ones count each known positive.
    """
    label = np.asarray([r["label"] for r in records], dtype=np.float32)
    if label.ndim != 2:
        raise CXRDataError(None, "records' label vectors differ in length: cannot stratify")
    mask = np.asarray([r.get("label_mask", [1.0] * label.shape[1]) for r in records], dtype=np.float32)
    positive = ((label == 1) & (mask > 0)).astype(float)
    per_image = np.concatenate([positive, (positive.sum(axis=1, keepdims=True) == 0)], axis=1)
    index = np.empty(len(records), dtype=np.intp)
    for k, p in enumerate(patients):
        index[by_patient[p]] = k
    sums = [np.bincount(index, weights=column, minlength=len(patients)) for column in per_image.T]
    return np.stack(sums, axis=1)


def _fill_empty_splits(
    assigned: dict[str, list[str]], names: list[str], targets: np.ndarray, by_patient: Mapping[str, list[int]]
) -> None:
    for name, target in zip(names, targets):
        if target > 0 and not assigned[name]:
            donor = max(names, key=lambda n: len(assigned[n]))
            if len(assigned[donor]) < 2:
                continue  # too few patients for every split
            smallest = min(assigned[donor], key=lambda p: (len(by_patient[p]), p))
            assigned[donor].remove(smallest)
            assigned[name].append(smallest)
