"""PadChest's label file: report terms to the shared vocabulary, exclusions, projections, physician labels."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..datalist import Datalist
from ..errors import CXRDataError
from ..vocabulary import PADCHEST_FINDINGS, PADCHEST_TERMS
from .common import (
    Missing,
    PathLike,
    check_files_exist,
    check_inside,
    check_unique,
    describe_row,
    existing_file,
    image_root_for,
    join_paths,
    make_records,
    normalise_view,
    read_csv,
)

__all__ = ["PADCHEST_PROJECTIONS", "read_padchest"]


#: PadChest's ``Projection`` values: PA, AP (erect), AP_horizontal (supine, horizontal beam), L (lateral),
#: COSTAL (rib views), EXCLUDE and UNK (not classified).
PADCHEST_PROJECTIONS: tuple[str, ...] = ("PA", "AP", "AP_horizontal", "L", "COSTAL", "EXCLUDE", "UNK")
_PADCHEST_COLUMNS = ["ImageID", "ImageDir", "PatientID", "Projection", "MethodLabel", "Labels"]
_PADCHEST_DROP_TERMS = {"exclude": "marked 'exclude'", "suboptimal study": "marked 'suboptimal study'"}


def read_padchest(
    csv_path: PathLike,
    image_root: PathLike | None = None,
    *,
    projections: Sequence[str] | None = ("PA", "AP", "AP_horizontal"),
    physician_only: bool = False,
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read PadChest's label file (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]``).

    Columns used: ``ImageID`` (file name), ``ImageDir`` (its folder, 0..54), ``PatientID``,
    ``Projection``, ``MethodLabel`` and ``Labels``, a Python-list string of report terms such as
    ``"['pleural effusion', 'cardiomegaly']"``, parsed as a literal (:func:`ast.literal_eval`,
    never evaluated as code; anything but a list of strings is an error naming the row).

    * Labels: multilabel over :data:`~bundle.data.vocabulary.PADCHEST_FINDINGS`; each term
      (stripped, lower case) maps through :data:`~bundle.data.vocabulary.PADCHEST_TERMS` (a class
      and its more specific terms: "lobar atelectasis" -> Atelectasis); terms that are no class
      are ignored. "No Finding" = the term "normal" and no class finding (226 real rows list
      "normal" beside a finding: the finding wins). All labels are known (mask 1).
    * Rows left out, counted in ``Datalist.dropped`` (shown in the split summary): no labels
      (blank or an empty list), "exclude", "suboptimal study", a ``Projection`` not in
      ``projections`` (default: the frontal PA, AP and AP_horizontal; ``None`` keeps every one,
      see :data:`PADCHEST_PROJECTIONS`), and with ``physician_only`` the rows labelled by
      PadChest's RNN rather than by a physician (``MethodLabel``).
    * ``patient_id``: ``PatientID`` (a patient has several studies: split by patient).
      ``view``: PA, AP (also AP_horizontal), LATERAL (L), else UNKNOWN.
    * Image path: ``image_root/<ImageDir>/<ImageID>`` (default root: the csv's folder); the
      images are 16-bit PNGs holding 10- or 12-bit data, which :func:`bundle.data.load_cxr`
      scales by its significant-bits rule.
    """
    path = existing_file(csv_path)
    wanted = None if projections is None else [projections] if isinstance(projections, str) \
        else list(projections)
    unknown = [v for v in wanted or [] if v not in PADCHEST_PROJECTIONS]
    if unknown:
        known = ", ".join(PADCHEST_PROJECTIONS)
        raise ValueError(f"unknown PadChest projection(s) {unknown}; known: {known}")
    df = read_csv(path, _PADCHEST_COLUMNS, only_required=True, dtype=str)
    check_unique(df, ["ImageDir", "ImageID"], path)
    terms = _padchest_terms(df["Labels"], path)

    dropped: dict[str, int] = {}
    keep = np.ones(len(df), bool)

    def drop(reason: str, rows: np.ndarray) -> None:
        nonlocal keep
        count = int((keep & rows).sum())
        if count:
            dropped[reason] = count
        keep &= ~rows

    drop("with no labels", terms.map(len).to_numpy() == 0)
    for term, reason in _PADCHEST_DROP_TERMS.items():
        drop(reason, terms.map(lambda found, term=term: term in found).to_numpy(bool))
    projection = df["Projection"].fillna("").str.strip()
    if wanted is not None:
        drop(f"with a projection other than {', '.join(wanted)}", ~projection.isin(wanted).to_numpy())
    if physician_only:
        by_physician = df["MethodLabel"].fillna("").str.strip() == "Physician"
        drop("not labelled by a physician (MethodLabel)", ~by_physician.to_numpy())
    if not keep.any():
        left_out = "; ".join(f"{count} {reason}" for reason, count in dropped.items())
        raise CXRDataError(path, f"no rows left after the filters ({left_out})")

    kept = terms[keep]
    column = {name: j for j, name in enumerate(PADCHEST_FINDINGS)}
    label = np.zeros((len(kept), len(PADCHEST_FINDINGS)), np.float32)
    for i, found in enumerate(kept):
        for term in found:
            canonical = PADCHEST_TERMS.get(term)
            if canonical is not None:
                label[i, column[canonical]] = 1.0
    no_finding = column["No Finding"]
    findings = [j for j in range(len(PADCHEST_FINDINGS)) if j != no_finding]
    label[label[:, findings].any(axis=1), no_finding] = 0.0  # a finding beats "normal"

    rel = (df["ImageDir"].fillna("").str.strip() + "/" + df["ImageID"].fillna("").str.strip())[keep]
    root = image_root_for(image_root, path)
    check_inside(root, rel, path, "ImageDir/ImageID", allow_outside_paths)
    images = join_paths(root, rel)
    if check_files:
        check_files_exist(images, path, root, missing)
    patient = df["PatientID"].fillna("").str.strip()[keep].tolist()
    view = projection[keep].map(normalise_view).tolist()
    records = make_records(images, label, np.ones_like(label), patient, view)
    return Datalist(records, list(PADCHEST_FINDINGS), "multilabel", dropped=dropped, source=str(path))


def _padchest_terms(labels: pd.Series, path: Path) -> pd.Series:
    """Each row's report terms as a frozenset of stripped, lower-case strings (empty for a blank cell)."""
    parsed: dict[str, frozenset[str]] = {}
    for text in labels.dropna().unique():
        try:
            value = ast.literal_eval(text)  # a literal only: never runs code
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            row = int(np.flatnonzero((labels == text).to_numpy())[0])
            raise CXRDataError(path, f"'Labels' at {describe_row(row)} is not a list of terms: {text[:80]!r} "
                                     f"({type(exc).__name__})") from exc
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            row = int(np.flatnonzero((labels == text).to_numpy())[0])
            raise CXRDataError(path, f"'Labels' at {describe_row(row)} is not a list of terms: {text[:80]!r}")
        parsed[text] = frozenset(t.strip().lower() for t in value if t.strip())
    empty: frozenset[str] = frozenset()
    return labels.map(lambda text: parsed.get(text, empty) if isinstance(text, str) else empty)
