"""CheXpert's ``train.csv`` / ``valid.csv`` (v1.0, v1.0-small): uncertainty, blank and "No Finding" rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..datalist import Datalist
from ..errors import CXRDataError
from ..vocabulary import CHEXPERT_FINDINGS
from .common import (
    Missing,
    PathLike,
    check_choice,
    check_files_exist,
    check_inside,
    check_unique,
    check_values,
    check_views,
    describe_row,
    existing_file,
    image_root_for,
    join_paths,
    make_records,
    parse_codes,
    read_csv,
)

__all__ = ["read_chexpert"]


_CHEXPERT_PREFIX = r"^CheXpert-v1\.0(?:-small)?/"
#: The columns the "No Finding" rule applies to: the pathologies ("Support Devices" is not one).
_CHEXPERT_PATHOLOGIES = [c for c in CHEXPERT_FINDINGS if c not in ("No Finding", "Support Devices")]


def read_chexpert(
    csv_path: PathLike,
    image_root: PathLike | None = None,
    *,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertain: Literal["ignore", "zeros", "ones"] = "ignore",
    blank: Literal["unknown", "negative"] = "unknown",
    check_files: bool = True,
    missing: Missing = "raise",
    allow_outside_paths: bool = False,
) -> Datalist:
    """Read CheXpert's ``train.csv`` / ``valid.csv`` (v1.0 or v1.0-small).

    Columns: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 observations of
    :data:`~bundle.data.vocabulary.CHEXPERT_FINDINGS` with values 1.0 (positive),
    0.0 (negative), -1.0 (uncertain) or blank (not mentioned). Any other value is an error.

    * Image path: ``Path`` without its ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` prefix,
      joined with ``image_root`` (default: the csv's folder): ``root/train/patient00001/...``.
    * ``patient_id``: the ``patientNNNNN`` folder of the path.
    * ``view``: Lateral -> "LATERAL"; Frontal -> the ``AP/PA`` value when it is AP, PA or LL,
      otherwise "UNKNOWN" (blank, or the one "RL" of the real train.csv). ``views`` keeps only
      those views (``None`` keeps all). The real train.csv has 17 Frontal rows whose AP/PA is
      LL (16) or RL (1): the default ``("PA", "AP")`` drops them.
    * ``uncertain`` (-1.0): "ignore" -> unknown (mask 0), "zeros" -> negative, "ones" -> positive.
    * ``blank``: "unknown" -> mask 0; "negative" -> known negative (label 0, mask 1).
    * The **"No Finding" rule**, applied after the two policies:

      1. a row with a known positive pathology (any finding but "No Finding" and
         "Support Devices"; an uncertain one counts under "ones") gets "No Finding" = 0, known;
         a positive pathology wins over a contradicting "No Finding" = 1;
      2. a row with "No Finding" = 1 (and no positive pathology) gets every *blank* pathology
         as a known negative, whatever ``blank`` says; an explicit -1.0 keeps its uncertainty
         policy (the real train.csv has none). "Support Devices" is not a pathology and is left
         as it is: 8,808 real rows have "No Finding" = 1 together with "Support Devices" = 1.
    """
    path = existing_file(csv_path)
    check_choice("uncertain", uncertain, ("ignore", "zeros", "ones"))
    check_choice("blank", blank, ("unknown", "negative"))
    wanted_views = None if views is None else check_views(views)
    df = read_csv(path, ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS])
    check_unique(df, ["Path"], path)
    codes = parse_codes(df, CHEXPERT_FINDINGS, (1.0, 0.0, -1.0), path, "1.0, 0.0, -1.0 or blank")
    kind = check_values(df["Frontal/Lateral"], ("Frontal", "Lateral"), path, "Frontal/Lateral")
    frontal = (kind == "Frontal").to_numpy(bool)
    ap_pa = df["AP/PA"].fillna("").astype(str).str.strip().str.upper()
    view = np.where(frontal, np.where(ap_pa.isin(["AP", "PA", "LL"]), ap_pa, "UNKNOWN"), "LATERAL")
    rel = df["Path"].astype(str).str.replace(_CHEXPERT_PREFIX, "", regex=True)
    patient = rel.str.extract(r"(?:^|/)(patient\d+)/", expand=False)
    if patient.isna().any():
        i = int(np.flatnonzero(patient.isna())[0])
        raise CXRDataError(
            path, f"no 'patientNNNNN' folder in Path {df['Path'].iloc[i]!r} at {describe_row(i)}")

    label, mask = _chexpert_label_and_mask(codes, uncertain, blank)
    keep = np.ones(len(df), bool) if wanted_views is None else np.isin(view, wanted_views)
    if not keep.any():
        raise CXRDataError(path, f"no rows left after the view filter views={list(wanted_views or [])} "
                                 f"(views in the file: {sorted(set(view.tolist()))})")
    root = image_root_for(image_root, path)
    check_inside(root, rel[keep], path, "Path", allow_outside_paths)
    images = join_paths(root, rel[keep])
    patient_ids, views, label, mask = patient[keep].tolist(), view[keep].tolist(), label[keep], mask[keep]
    del df, codes, kind, ap_pa, view, rel, patient  # the frame before the records: 0.085 GiB less at 223,414 rows
    if check_files:
        check_files_exist(images, path, root, missing)
    records = make_records(images, label, mask, patient_ids, views)
    dropped = {}
    if wanted_views and (~keep).any():
        dropped[f"with a view other than {', '.join(wanted_views)}"] = int((~keep).sum())
    return Datalist(records, list(CHEXPERT_FINDINGS), "multilabel", dropped=dropped, source=str(path))


def _chexpert_label_and_mask(codes: np.ndarray, uncertain: str, blank: str) -> tuple[np.ndarray, np.ndarray]:
    """Label and mask (N, 14) from CheXpert codes (1, 0, -1, NaN); see :func:`read_chexpert`."""
    pos, neg, unc, empty = codes == 1, codes == 0, codes == -1, np.isnan(codes)
    label = (pos | (unc & (uncertain == "ones"))).astype(np.float32)
    mask = pos | neg | (unc & (uncertain != "ignore")) | (empty & (blank == "negative"))
    nf = CHEXPERT_FINDINGS.index("No Finding")
    cols = [CHEXPERT_FINDINGS.index(c) for c in _CHEXPERT_PATHOLOGIES]
    any_positive = ((label[:, cols] == 1) & mask[:, cols]).any(axis=1)
    # rule 2: "No Finding" = 1 (and no positive pathology) -> blank pathologies are known negatives
    fill = empty[:, cols] & (pos[:, nf] & ~any_positive)[:, None]
    sub_label, sub_mask = label[:, cols], mask[:, cols]
    sub_label[fill], sub_mask[fill] = 0.0, True
    label[:, cols], mask[:, cols] = sub_label, sub_mask
    # rule 1: a positive pathology -> "No Finding" = 0, known
    label[any_positive, nf], mask[any_positive, nf] = 0.0, True
    return label, mask.astype(np.float32)
