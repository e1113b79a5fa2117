"""Comparing two models on the same images: a paired bootstrap over images and DeLong's test.

A gain of one model over another measured on one test set moves with the test images as much as
with the training seed. This module gives the two numbers a reviewer asks for, both computed from
per-image probabilities (what ``configs/evaluate.json`` writes to ``<eval_dir>/per_image.csv``):

* :func:`paired_bootstrap`: the difference of macro AUC, model A minus model B, with a percentile
  interval over resampled images. Each draw resamples *patients* with replacement (all images of a
  drawn patient come in together, so a patient's several images do not count as independent
  evidence) and scores both models on the very same draw. Several runs of a model (seeds) are
  averaged: the difference is ``mean over A's runs - mean over B's runs`` of the macro AUC, in the
  point estimate and in every draw.
* :func:`delong_test`: DeLong, DeLong and Clarke-Pearson (Biometrics 1988) for correlated AUCs of
  two models scored on the same images, per class (each class is a binary AUC: multi-label findings,
  or one class against the rest for multi-class). For the *macro* AUC difference the per-image
  structural components of every class are averaged over classes (and over runs), so the variance
  of the macro difference counts the correlation between classes that share images; for one class
  it is exactly DeLong's variance. Images of one patient are summed before squaring (the clustered
  form of Obuchowski, Biometrics 1997), which equals the plain form when every patient has one image.

:func:`criteria` states which of the targets a gain meets: at least +0.03, more than twice its seed
standard deviation, and a paired interval that excludes zero.

Per-image predictions are held in :class:`ImageScores`; :func:`read_per_image` reads the CSV
written by :class:`bundle.handlers.PerImageScores`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

__all__ = ["ImageScores", "auc_components", "compare", "criteria", "delong_sets", "delong_test", "macro_auc",
           "paired_bootstrap", "paired_bootstrap_sets", "read_per_image", "write_per_image"]

#: the gain a target asks for, in macro AUC
MIN_GAIN = 0.03


@dataclass
class ImageScores:
    """One model's probabilities on a set of images (one row per image), with the labels they are scored on.

    Attributes:
        images: (N,) image names (paths or data set ids): what two models are paired on.
        patient_ids: (N,) the unit of resampling; images of one patient are drawn together.
        labels: (N, C) 0/1 targets (multi-hot, or one-hot for a multi-class task).
        mask: (N, C) 1 where the label is known (unknown labels are left out of that class's AUC).
        probs: (R, N, C) probabilities of R runs (seeds) of the model; R = 1 for a single model.
        class_names: the C classes.
    """

    images: list[str]
    patient_ids: list[str]
    labels: np.ndarray
    mask: np.ndarray
    probs: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float64)
        self.mask = np.ones_like(self.labels) if self.mask is None else np.asarray(self.mask, dtype=np.float64)
        self.probs = np.asarray(self.probs, dtype=np.float64)
        if self.probs.ndim == 2:
            self.probs = self.probs[None]
        n, c = self.labels.shape
        if self.probs.shape[1:] != (n, c) or self.mask.shape != (n, c) or len(self.images) != n:
            raise ValueError(f"per-image scores of mismatched shapes: {len(self.images)} images, labels {self.labels.shape}"
                             f", mask {self.mask.shape}, probabilities {self.probs.shape}")
        if not self.patient_ids:
            self.patient_ids = list(self.images)
        if not self.class_names:
            self.class_names = [str(i) for i in range(c)]

    @property
    def runs(self) -> int:
        return int(self.probs.shape[0])

    def select(self, images: Sequence[str]) -> ImageScores:
        """These images, in this order (each must be among ``self.images``)."""
        where = {name: i for i, name in enumerate(self.images)}
        missing = [name for name in images if name not in where]
        if missing:
            raise KeyError(f"{len(missing)} image(s) have no scores, e.g. {missing[0]}")
        rows = np.asarray([where[name] for name in images], dtype=int)
        return ImageScores([self.images[i] for i in rows], [self.patient_ids[i] for i in rows], self.labels[rows],
                           self.mask[rows], self.probs[:, rows], list(self.class_names))

    def by_file_name(self) -> ImageScores:
        """The same scores with the images named by file name alone, when those are unique (else unchanged): the
        same data set read from two places (two mounts, each run's own copy of generated images)."""
        names = [os.path.basename(name) for name in self.images]
        if len(set(names)) < len(names):
            return self
        return ImageScores(names, list(self.patient_ids), self.labels, self.mask, self.probs, list(self.class_names))

    @staticmethod
    def stack(runs: Sequence[ImageScores]) -> ImageScores:
        """Several runs of one model (seeds) as one :class:`ImageScores`, on the images all of them scored."""
        common = [name for name in runs[0].images if all(name in set(r.images) for r in runs[1:])]
        chosen = [r.select(common) for r in runs]
        return ImageScores(common, chosen[0].patient_ids, chosen[0].labels, chosen[0].mask,
                           np.concatenate([r.probs for r in chosen]), list(runs[0].class_names))


# ---------------------------------------------------------------------------------------------- AUC and DeLong


def auc_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs of K score vectors for one binary outcome, with DeLong's structural components.

    Args:
        labels: (n,) 0/1 outcome (both values present).
        scores: (K, n) or (n,) scores, higher = more likely positive.

    Returns:
        ``(auc, v10, v01)``: auc (K,); v10 (K, m): for each of the m positives, the share of
        negatives it outscores (ties count half); v01 (K, k): for each of the k negatives, the share
        of positives that outscore it. ``auc`` is the mean of either. Computed from midranks
        (O(n log n)), as DeLong's components are ranks in disguise.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positives, negatives = scores[:, labels], scores[:, ~labels]
    m, k = positives.shape[1], negatives.shape[1]
    if not (m and k):
        raise ValueError("an AUC needs both positive and negative images")
    overall = rankdata(scores, axis=1)
    v10 = (overall[:, labels] - rankdata(positives, axis=1)) / k
    v01 = 1.0 - (overall[:, ~labels] - rankdata(negatives, axis=1)) / m
    return v10.mean(axis=1), v10, v01


def _influence(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (K,) and per-image influence (K, n): positives ``(v10 - auc) / sqrt(m (m - 1))``, negatives
    ``(v01 - auc) / sqrt(k (k - 1))``; the sum of squares over images is DeLong's variance of the AUC."""
    labels = np.asarray(labels).astype(bool)
    auc, v10, v01 = auc_components(labels, scores)
    m, k = v10.shape[1], v01.shape[1]
    influence = np.zeros((len(auc), len(labels)))
    influence[:, labels] = (v10 - auc[:, None]) / math.sqrt(m * max(m - 1, 1))
    influence[:, ~labels] = (v01 - auc[:, None]) / math.sqrt(k * max(k - 1, 1))
    return auc, influence


def _cluster_sum(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Sum the last axis within each group (one column per group)."""
    if groups is None:
        return values
    codes, inverse = np.unique(groups, return_inverse=True)
    summed = np.zeros(values.shape[:-1] + (len(codes),))
    np.add.at(summed, (..., inverse), values)
    return summed


def _z_test(difference: float, variance: float) -> dict[str, float]:
    se = math.sqrt(max(variance, 0.0))
    z = difference / se if se > 0 else (0.0 if difference == 0 else math.copysign(math.inf, difference))
    return {"difference": difference, "se": se, "z": z, "p": float(2 * norm.sf(abs(z))),
            "ci_low": difference - norm.ppf(0.975) * se, "ci_high": difference + norm.ppf(0.975) * se}


def delong_test(a: ImageScores, b: ImageScores) -> dict[str, Any]:
    """DeLong's test of ``AUC(a) - AUC(b)`` on the same images: per class and for the macro AUC.

    Each class is one binary AUC over the images whose label is known. With several runs the AUC of a
    model is the mean over its runs (their influences average too). ``macro`` combines the classes:
    the per-image influences of every class with both positives and negatives are averaged over
    those classes, so its variance holds the covariances between classes that share images; images
    are summed per patient first. Returns ``{"per_class": {class: {auc_a, auc_b, difference, se, z,
    p}}, "macro": {difference, se, z, p, ci_low, ci_high, classes}, "method": ...}`` (z-test,
    two-sided; ``ci_*``: the normal 95 % interval of the difference).
    """
    a, b = _aligned(a, b)
    groups = np.asarray(a.patient_ids)
    per_class: dict[str, dict[str, float]] = {}
    total = np.zeros(len(a.images))
    differences, used = [], 0
    for c, name in enumerate(a.class_names):
        known = a.mask[:, c] > 0
        y = a.labels[known, c] > 0.5
        if not (0 < y.sum() < len(y)):
            per_class[name] = {"auc_a": math.nan, "auc_b": math.nan, "difference": math.nan, "se": math.nan,
                               "z": math.nan, "p": math.nan}
            continue
        auc_a, inf_a = _influence(y, a.probs[:, known, c])
        auc_b, inf_b = _influence(y, b.probs[:, known, c])
        influence = np.zeros(len(a.images))
        influence[known] = inf_a.mean(axis=0) - inf_b.mean(axis=0)
        difference = float(auc_a.mean() - auc_b.mean())
        variance = float((_cluster_sum(influence, groups) ** 2).sum())
        per_class[name] = {"auc_a": float(auc_a.mean()), "auc_b": float(auc_b.mean()),
                           **{k: v for k, v in _z_test(difference, variance).items() if not k.startswith("ci_")}}
        total += influence
        differences.append(difference)
        used += 1
    if used:
        macro = _z_test(float(np.mean(differences)), float((_cluster_sum(total / used, groups) ** 2).sum()))
    else:
        macro = _z_test(math.nan, math.nan)
    return {"per_class": per_class, "macro": {**macro, "classes": used},
            "method": "DeLong et al. 1988 per class; macro: per-image structural components averaged over classes "
                      "and runs, summed per patient (Obuchowski 1997), z-test"}


# ---------------------------------------------------------------------------------------------- paired bootstrap


def macro_auc(labels: np.ndarray, mask: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Macro AUC (mean over classes with both positives and negatives among known labels) of each of K
    models at once: ``probs`` (K, N, C) -> (K,). Equal to :func:`bundle.metrics.classification_metrics`'
    ``auc_macro``, computed from midranks so that a bootstrap can afford thousands of draws."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        probs = probs[None]
    aucs = []
    for c in range(labels.shape[1]):
        known = mask[:, c] > 0
        y = labels[known, c] > 0.5
        m = int(y.sum())
        k = len(y) - m
        if not (m and k):
            continue
        ranks = rankdata(probs[:, known, c], axis=1)
        aucs.append((ranks[:, y].sum(axis=1) - m * (m + 1) / 2) / (m * k))
    return np.mean(aucs, axis=0) if aucs else np.full(probs.shape[0], math.nan)


def paired_bootstrap(a: ImageScores, b: ImageScores, resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """Macro AUC of ``a`` minus ``b`` on the same images, with a percentile bootstrap interval.

    Every draw resamples patients with replacement (as many as there are) and scores both models, all
    their runs, on the rows of the drawn patients; the difference of a draw is the mean macro AUC over
    ``a``'s runs minus that over ``b``'s. Returns ``{difference, ci_low, ci_high, level, resamples,
    images, patients, p_bootstrap}`` where ``p_bootstrap`` is twice the share of draws on the far side
    of zero (a rough two-sided p-value; the interval is the result).
    """
    return paired_bootstrap_sets([(a, b)], resamples, level, seed)


def paired_bootstrap_sets(pairs: Sequence[tuple[ImageScores, ImageScores]], resamples: int = 1000,
                          level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """:func:`paired_bootstrap` of the mean difference over several test sets (e.g. seeds each with its own
    patient-level split): each draw resamples every set's patients independently and averages the sets'
    differences. One set is :func:`paired_bootstrap` itself."""
    prepared = []
    for a, b in pairs:
        a, b = _aligned(a, b)
        if len(a.images) < 2 or resamples < 1:
            raise ValueError(f"a paired bootstrap needs >= 2 images and >= 1 resample, got {len(a.images)} and "
                             f"{resamples}")
        _, inverse = np.unique(np.asarray(a.patient_ids), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
        prepared.append((a, np.concatenate([a.probs, b.probs]), members, all(len(m) == 1 for m in members)))

    def difference(index: int, rows: np.ndarray | slice) -> float:
        a, probs = prepared[index][:2]
        aucs = macro_auc(a.labels[rows], a.mask[rows], probs[:, rows])
        return float(aucs[:a.runs].mean() - aucs[a.runs:].mean())

    generator = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        values = []
        for index, (_, _, members, singletons) in enumerate(prepared):
            chosen = generator.integers(0, len(members), len(members))
            rows = (np.asarray([members[g][0] for g in chosen]) if singletons
                    else np.concatenate([members[g] for g in chosen]))
            values.append(difference(index, rows))
        draws.append(float(np.mean(values)))
    values = np.asarray([d for d in draws if not math.isnan(d)])
    tail = (1.0 - level) / 2.0
    point = float(np.mean([difference(i, slice(None)) for i in range(len(prepared))]))
    low, high = (float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))) if len(values) else (
        math.nan, math.nan)
    far = float(min(np.mean(values <= 0), np.mean(values >= 0))) if len(values) else math.nan
    return {"difference": point, "ci_low": low, "ci_high": high, "level": level, "resamples": resamples,
            "images": sum(len(p[0].images) for p in prepared), "patients": sum(len(p[2]) for p in prepared),
            "p_bootstrap": min(1.0, 2 * far), "runs_a": sum(p[0].runs for p in prepared),
            "runs_b": sum(p[1].shape[0] - p[0].runs for p in prepared), "sets": len(prepared)}


def delong_sets(pairs: Sequence[tuple[ImageScores, ImageScores]]) -> dict[str, Any]:
    """DeLong's macro test of the mean difference over independent test sets (disjoint patients): the mean of
    the sets' macro differences, its variance the sum of theirs over the number of sets squared."""
    tests = [delong_test(a, b)["macro"] for a, b in pairs]
    k = len(tests)
    macro = _z_test(float(np.mean([t["difference"] for t in tests])), float(sum(t["se"] ** 2 for t in tests)) / k ** 2)
    return {"macro": {**macro, "classes": min(t["classes"] for t in tests)}, "sets": k,
            "method": "DeLong et al. 1988 per set (macro: per-image components averaged over classes), sets independent"}


def criteria(gain: float | None, seed_std: float | None, interval: tuple[float, float] | None,
             min_gain: float = MIN_GAIN) -> dict[str, bool | None]:
    """Which targets a gain meets: ``gain >= min_gain``; ``gain > 2 x seed std`` (None with one seed); the paired
    interval over images excludes zero (None without one)."""
    finite = gain is not None and not math.isnan(gain)
    return {f"gain >= {min_gain:+.2f}": bool(finite and gain >= min_gain),
            "gain > 2x seed std": (bool(finite and gain > 2 * seed_std)
                                   if seed_std is not None and not math.isnan(seed_std) and seed_std > 0 else None),
            "interval excludes 0": (bool(interval[0] > 0 or interval[1] < 0)
                                    if interval is not None and not any(math.isnan(v) for v in interval) else None)}


def compare(a: ImageScores, b: ImageScores, resamples: int = 1000, level: float = 0.95, seed: int = 0,
            delong: bool = True) -> dict[str, Any]:
    """Both tests of ``a`` against ``b`` on the images both scored: ``{"bootstrap": ..., "delong": ...,
    "auc_macro_a", "auc_macro_b"}`` (macro AUCs as means over each model's runs)."""
    a, b = _aligned(a, b)
    result: dict[str, Any] = {"images": len(a.images), "patients": len(set(a.patient_ids)),
                              "auc_macro_a": float(macro_auc(a.labels, a.mask, a.probs).mean()),
                              "auc_macro_b": float(macro_auc(b.labels, b.mask, b.probs).mean()),
                              "bootstrap": paired_bootstrap(a, b, resamples, level, seed)}
    if delong:
        result["delong"] = delong_test(a, b)
    return result


def _aligned(a: ImageScores, b: ImageScores) -> tuple[ImageScores, ImageScores]:
    """Both on the images both scored (by name; by file name when no full name is shared), in ``a``'s order;
    the labels must agree (the same data set)."""
    if list(a.class_names) != list(b.class_names):
        raise ValueError(f"the models score other classes: {a.class_names} and {b.class_names}")
    if a.images != b.images:
        in_b = set(b.images)
        common = [name for name in a.images if name in in_b]
        if not common:  # the same data set at another place (another mount, a run's own copy): pair by file name
            a, b = a.by_file_name(), b.by_file_name()
            in_b = set(b.images)
            common = [name for name in a.images if name in in_b]
        if not common:
            raise ValueError("the two models share no scored image: compare them on the same data set")
        a, b = a.select(common), b.select(common)
    known = (a.mask > 0) & (b.mask > 0)
    if not np.array_equal(a.labels[known], b.labels[known]):
        raise ValueError("the two models' labels differ on the same images: they were scored on other data sets")
    return a, b


# ---------------------------------------------------------------------------------------------- per-image files


def _heads(columns: Sequence[str]) -> dict[str, list[str]]:
    heads: dict[str, list[str]] = {}
    for column in columns:
        head, _, rest = column.rpartition("prob/") if "prob/" in column else ("", "", "")
        if rest:
            heads.setdefault(head, []).append(rest)
    return heads


def write_per_image(path: str | os.PathLike, images: Sequence[str], patient_ids: Sequence[str],
                    heads: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    class_names: dict[str, Sequence[str]]) -> None:
    """The CSV :func:`read_per_image` reads: ``image, patient_id``, then per head (``""``, or ``"mlct/"`` and
    ``"mcct/"`` for a two-head ViT) and class ``<head>label/<class>``, ``<head>mask/<class>``, ``<head>prob/<class>``."""
    from .handlers.metrics_writer import write_text_atomic
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["image", "patient_id"]
    for head in heads:
        header += [f"{head}{kind}/{c}" for kind in ("label", "mask", "prob") for c in class_names[head]]
    writer.writerow(header)
    for i, (image, patient) in enumerate(zip(images, patient_ids)):
        row: list[Any] = [image, patient]
        for labels, mask, probs in heads.values():
            row += [f"{v:g}" for v in labels[i]] + [f"{v:g}" for v in mask[i]] + [f"{v:.9g}" for v in probs[i]]
        writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())


def read_per_image(path: str | os.PathLike, head: str = "") -> ImageScores:
    """One model's per-image scores from an evaluation's ``per_image.csv`` (or the folder that holds it).

    ``head``: ``""`` for a one-head network; ``"mlct/"`` (findings) or ``"mcct/"`` (normal / abnormal) for a
    two-head ViT. A file without the head, or a missing file, is a :class:`~bundle.data.errors.CXRDataError`
    naming it.
    """
    from .data.errors import CXRDataError

    path = Path(path)
    if path.is_dir():
        path = path / "per_image.csv"
    if not path.is_file():
        raise CXRDataError(path, "no per-image scores here", advice="evaluate the model with configs/evaluate.json "
                                                                    "(it writes <output_dir>/eval/per_image.csv)")
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows or rows[0][:2] != ["image", "patient_id"]:
        raise CXRDataError(path, "not a per-image scores file (its header does not begin 'image,patient_id')")
    header, body = rows[0], rows[1:]
    heads = _heads(header)
    if head not in heads:
        raise CXRDataError(path, f"no scores of head {head!r}; it has {sorted(heads)}",
                           advice="pass --head with one of these")
    names = heads[head]
    column = {name: i for i, name in enumerate(header)}
    try:
        table = {kind: np.asarray([[float(r[column[f"{head}{kind}/{c}"]]) for c in names] for r in body],
                 dtype=np.float64).reshape(len(body), len(names)) for kind in ("label", "mask", "prob")}
    except (ValueError, KeyError, IndexError) as error:
        raise CXRDataError(path, f"a row cannot be read ({error})") from None
    return ImageScores([r[0] for r in body], [r[1] for r in body], table["label"], table["mask"], table["prob"],
                       list(names))
