"""Readers, vocabulary and patient splits, on the real label files and on generated inputs.

Real data lives in ``$CXR_DATA_ROOT`` (default ``../shared/data`` beside the project); a test
that needs it skips when it is missing, and fails instead under ``CI=true``.
Expected numbers are computed here independently with pandas from the same files.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import require_shared
from bundle.data.datalist import VIEWS, Datalist
from bundle.data.errors import CXRDataError
from bundle.data.readers import (
    read_chexpert,
    read_csv_datalist,
    read_cxr3,
    read_image_folder,
    read_medmnist,
    read_nih,
    read_nih_boxes,
    read_padchest,
    read_vindr,
)
from bundle.data.splits import patient_split, patients_in_several_splits, split_from_official
from bundle.data.vocabulary import (
    CHEXPERT_FINDINGS,
    FINDINGS,
    NIH_FINDINGS,
    PADCHEST_FINDINGS,
    PADCHEST_TERMS,
    SYNTHETIC_FINDINGS,
    VINDR_FINDINGS,
    canonical_finding,
)

CHEXPERT_CSV = "labels/chexpert_train.csv.gz"
NIH_CSV = "labels/nih_Data_Entry_2017_v2020.csv.gz"
NIH_BBOX = "labels/nih_BBox_List_2017.csv.gz"
VINDR_CSV = "labels/vindr_cxr_train_annotations.csv.gz"
PADCHEST_CSV = "labels/padchest_labels_160K_01.02.19.csv.gz"
NIH_SAMPLES = ("00000001_000.png", "00000002_000.png", "00000013_003.png")
PATHOLOGIES = [c for c in CHEXPERT_FINDINGS if c not in ("No Finding", "Support Devices")]


def arrays(datalist: Datalist | list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(label, label_mask) of the records as (N, C) float32 arrays."""
    records = datalist.records if isinstance(datalist, Datalist) else datalist
    label = np.array([r["label"] for r in records], dtype=np.float32)
    return label, np.array([r["label_mask"] for r in records], dtype=np.float32)


def assert_error(exc_info: pytest.ExceptionInfo, path: Path | str, *fragments: str) -> None:
    message = str(exc_info.value)
    assert isinstance(exc_info.value, CXRDataError)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------------------------- vocabulary


def test_synonyms_map_to_one_canonical_name():
    names = ("Pleural Effusion", "Effusion", "Pleural effusion", "pleural_effusion", " PLEURAL  EFFUSION")
    for name in names:
        assert canonical_finding(name) == "Pleural Effusion"
    assert canonical_finding("Infiltrate") == canonical_finding("infiltration") == "Infiltration"
    assert canonical_finding("Pleural_Thickening") == canonical_finding("Pleural thickening")
    assert canonical_finding("pleural-thickening") == "Pleural Thickening"
    assert canonical_finding("nodule / mass") == canonical_finding("Nodule/Mass") == "Nodule/Mass"
    assert canonical_finding("ILD") == "Interstitial Lung Disease"
    assert canonical_finding("Pulmonary fibrosis") == "Fibrosis"
    assert canonical_finding("No finding") == canonical_finding("normal") == "No Finding"
    assert canonical_finding("covid") == "COVID-19"


def test_unknown_finding_raises():
    with pytest.raises(CXRDataError, match="unknown finding 'flu'; known: No Finding"):
        canonical_finding("flu")


def test_finding_groups_are_canonical():
    assert len(CHEXPERT_FINDINGS) == 14 and len(NIH_FINDINGS) == 14 and len(VINDR_FINDINGS) == 15
    for group in (CHEXPERT_FINDINGS, NIH_FINDINGS, VINDR_FINDINGS, SYNTHETIC_FINDINGS):
        assert all(canonical_finding(n) == n for n in group)
    synthetic = ("Nodule", "Consolidation", "Pleural Effusion", "Cardiomegaly", "Pneumothorax")
    assert SYNTHETIC_FINDINGS == synthetic
    assert len(set(FINDINGS)) == len(FINDINGS) == 27


# ----------------------------------------------------------------------------- CheXpert (real, full scale)


@pytest.fixture(scope="module")
def chexpert_df() -> pd.DataFrame:
    return pd.read_csv(require_shared(CHEXPERT_CSV))


@pytest.fixture(scope="module")
def chexpert_frontal() -> Datalist:
    return read_chexpert(require_shared(CHEXPERT_CSV), "/data/chexpert", check_files=False)  # PA + AP, "ignore"


def expected_counts(df: pd.DataFrame, uncertain: str, blank: str) -> dict[str, tuple[int, int, int]]:
    """Per column (positives, known negatives, unknown), from the raw values, with pandas."""
    values = df[list(CHEXPERT_FINDINGS)]
    pos = values == 1 if uncertain != "ones" else values.isin([1, -1])
    any_pathology = pos[PATHOLOGIES].any(axis=1)
    no_finding = (values["No Finding"] == 1) & ~any_pathology
    out = {}
    for column in CHEXPERT_FINDINGS:
        v = values[column]
        known = v.isin([1, 0]) | ((v == -1) & (uncertain != "ignore")) | (v.isna() & (blank == "negative"))
        if column in PATHOLOGIES:
            known |= v.isna() & no_finding
            p = pos[column]
        elif column == "No Finding":
            known |= any_pathology
            p = no_finding
        else:
            p = pos[column]
        out[column] = (int((p & known).sum()), int((~p & known).sum()), int((~known).sum()))
    return out


def measured_counts(label: np.ndarray, mask: np.ndarray) -> dict[str, tuple[int, int, int]]:
    known = mask == 1
    positive, negative = (label == 1) & known, (label == 0) & known
    return {
        c: (int(positive[:, j].sum()), int(negative[:, j].sum()), int((~known[:, j]).sum()))
        for j, c in enumerate(CHEXPERT_FINDINGS)
    }


def assert_no_finding_rule(label: np.ndarray, mask: np.ndarray) -> None:
    nf = CHEXPERT_FINDINGS.index("No Finding")
    cols = [CHEXPERT_FINDINGS.index(c) for c in PATHOLOGIES]
    no_finding = (label[:, nf] == 1) & (mask[:, nf] == 1)
    assert no_finding.any()
    # "No Finding" = 1 -> every pathology is a known negative (the real file has no -1 there)
    assert (label[no_finding][:, cols] == 0).all() and (mask[no_finding][:, cols] == 1).all()
    # a known positive pathology -> "No Finding" is a known 0
    positive = ((label[:, cols] == 1) & (mask[:, cols] == 1)).any(axis=1)
    assert (label[positive, nf] == 0).all() and (mask[positive, nf] == 1).all()
    assert (positive | no_finding).sum() <= len(label)


@pytest.mark.shared_data
def test_chexpert_views_and_prefix(chexpert_df, chexpert_frontal):
    datalist = chexpert_frontal
    df = chexpert_df
    assert len(df) == 223_414
    frontal = df["Frontal/Lateral"] == "Frontal"
    assert frontal.sum() == 191_027
    # 16 "LL" and 1 "RL" frontal rows are neither PA nor AP: the default views drop them
    expected = int((frontal & df["AP/PA"].isin(["PA", "AP"])).sum())
    assert expected == 191_010 == frontal.sum() - 17
    assert len(datalist) == expected
    assert datalist.task == "multilabel" and datalist.class_names == list(CHEXPERT_FINDINGS)
    views = pd.Series([r["view"] for r in datalist.records]).value_counts()
    assert views.to_dict() == {"AP": 161_590, "PA": 29_420}
    images = [r["image"] for r in datalist.records]
    assert images[0] == "/data/chexpert/train/patient00001/study1/view1_frontal.jpg"
    assert not any("CheXpert-v1.0" in p for p in images)
    assert all(p.startswith("/data/chexpert/train/patient") for p in images)
    assert datalist.records[0]["patient_id"] == "patient00001"
    kept_paths = df.loc[frontal & df["AP/PA"].isin(["PA", "AP"]), "Path"]
    patients = kept_paths.str.extract(r"/(patient\d+)/", expand=False)
    assert [r["patient_id"] for r in datalist.records] == patients.tolist()


@pytest.mark.shared_data
def test_chexpert_check_files_at_full_scale(tmp_path):
    (tmp_path / "train" / "patient00001" / "study1").mkdir(parents=True)
    (tmp_path / "train" / "patient00001" / "study1" / "view1_frontal.jpg").write_bytes(b"")
    with pytest.raises(CXRDataError) as exc_info:
        read_chexpert(require_shared(CHEXPERT_CSV), tmp_path)
    assert_error(
        exc_info, require_shared(CHEXPERT_CSV), "191009 of 191010 images do not exist", "patient00002/study2/view1_"
    )


@pytest.mark.shared_data
def test_chexpert_ignore_policy_counts(chexpert_df, chexpert_frontal):
    datalist = chexpert_frontal
    df = chexpert_df[(chexpert_df["Frontal/Lateral"] == "Frontal") & chexpert_df["AP/PA"].isin(["PA", "AP"])]
    label, mask = arrays(datalist)
    assert measured_counts(label, mask) == expected_counts(df, "ignore", "unknown")
    assert_no_finding_rule(label, mask)


@pytest.mark.shared_data
def test_chexpert_zeros_policy_all_views(chexpert_df):
    datalist = read_chexpert(require_shared(CHEXPERT_CSV), check_files=False, views=None, uncertain="zeros")
    assert len(datalist) == 223_414
    assert {r["view"] for r in datalist.records} == {"AP", "PA", "LATERAL", "LL", "UNKNOWN"}
    label, mask = arrays(datalist)
    counts = measured_counts(label, mask)
    assert counts == expected_counts(chexpert_df, "zeros", "unknown")
    # known numbers: Pleural Effusion has 86,187 x 1.0, 35,396 x 0.0, 11,628 x -1.0 (-> 0 here),
    # and 10,931 blanks in "No Finding" rows (-> known 0)
    assert counts["Pleural Effusion"] == (86_187, 35_396 + 11_628 + 10_931, 90_203 - 10_931)
    assert_no_finding_rule(label, mask)


@pytest.mark.shared_data
def test_chexpert_ones_policy_blank_negative(chexpert_df):
    datalist = read_chexpert(
        require_shared(CHEXPERT_CSV), check_files=False, views=None, uncertain="ones", blank="negative"
    )
    label, mask = arrays(datalist)
    counts = measured_counts(label, mask)
    assert counts == expected_counts(chexpert_df, "ones", "negative")
    assert counts["Pleural Effusion"] == (86_187 + 11_628, 35_396 + 90_203, 0)
    assert counts["No Finding"] == (22_381, 223_414 - 22_381, 0)
    assert all(unknown == 0 for _, _, unknown in counts.values())
    assert_no_finding_rule(label, mask)


# ----------------------------------------------------------------------------- CheXpert (generated)

CHEXPERT_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_FINDINGS)


def write_chexpert(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([CHEXPERT_HEADER, *rows]) + "\n")
    return path


def chexpert_row(patient: int, view: str, values: dict[str, str], kind: str = "Frontal") -> str:
    cells = [values.get(c, "") for c in CHEXPERT_FINDINGS]
    path = f"CheXpert-v1.0/train/patient{patient:05d}/study1/view1_frontal.jpg"
    return f"{path},Male,50,{kind},{view}," + ",".join(cells)


def test_chexpert_no_finding_rule_and_views(tmp_path):
    csv = write_chexpert(
        tmp_path / "train.csv",
        [
            chexpert_row(1, "PA", {"No Finding": "1.0", "Support Devices": "1.0"}),
            chexpert_row(2, "AP", {"Edema": "1.0"}),
            chexpert_row(3, "AP", {"No Finding": "1.0", "Edema": "1.0"}),  # contradiction: the finding wins
            chexpert_row(4, "LL", {"Edema": "-1.0"}),
            chexpert_row(5, "", {}, kind="Lateral"),
            chexpert_row(6, "", {"Edema": "0.0"}),
        ],
    )
    datalist = read_chexpert(csv, views=None, check_files=False)
    assert [r["view"] for r in datalist.records] == ["PA", "AP", "AP", "LL", "LATERAL", "UNKNOWN"]
    assert datalist.records[0]["image"] == str(tmp_path / "train/patient00001/study1/view1_frontal.jpg")
    label, mask = arrays(datalist)
    nf, edema, devices = (CHEXPERT_FINDINGS.index(c) for c in ("No Finding", "Edema", "Support Devices"))
    assert label[0, nf] == 1 and mask[0].sum() == 14 and label[0, devices] == 1  # blanks -> known negatives
    assert (label[1, nf], mask[1, nf]) == (0, 1) and mask[1].sum() == 2  # NF known 0, others blank -> unknown
    assert (label[2, nf], mask[2, nf], label[2, edema]) == (0, 1, 1)
    assert mask[3, edema] == 0 and mask[4].sum() == 0
    assert len(read_chexpert(csv, check_files=False)) == 3  # PA + AP only
    ones = read_chexpert(csv, views=["LL"], uncertain="ones", check_files=False)
    assert arrays(ones)[0][0, edema] == 1 and arrays(ones)[0][0, nf] == 0


def test_chexpert_check_files_reports_all_missing(tmp_path):
    rows = [chexpert_row(i, "PA", {"Edema": "1.0"}) for i in range(1, 9)]
    csv = write_chexpert(tmp_path / "valid.csv", rows)
    present = tmp_path / "train/patient00002/study1/view1_frontal.jpg"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"")
    with pytest.raises(CXRDataError) as exc_info:
        read_chexpert(csv)
    assert_error(exc_info, csv, "7 of 8 images do not exist", "patient00001/study1/view1_frontal.jpg")
    assert len(read_chexpert(csv, check_files=False)) == 8


def test_chexpert_bad_value_names_value_column_and_row(tmp_path):
    rows = [chexpert_row(1, "PA", {}), chexpert_row(2, "PA", {"Edema": "2.0"})]
    csv = write_chexpert(tmp_path / "train.csv", rows)
    with pytest.raises(CXRDataError) as exc_info:
        read_chexpert(csv, check_files=False)
    assert_error(exc_info, csv, "unknown label value '2.0'", "column 'Edema'", "row 2")


def test_chexpert_missing_columns_and_file(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("Path,Sex,Age,Frontal/Lateral,Edema\nx/patient00001/a.jpg,Male,1,Frontal,1.0\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_chexpert(csv, check_files=False)
    assert_error(exc_info, csv, "missing column(s)", "'AP/PA'", "'No Finding'", "'Support Devices'")
    with pytest.raises(CXRDataError) as exc_info:
        read_chexpert(tmp_path / "nope.csv")
    assert_error(exc_info, tmp_path / "nope.csv", "does not exist")


# ----------------------------------------------------------------------------- NIH (real)


@pytest.fixture(scope="module")
def nih() -> Datalist:
    return read_nih(require_shared(NIH_CSV), "/data/nih", bbox_csv=require_shared(NIH_BBOX), check_files=False)


@pytest.mark.shared_data
def test_nih_label_counts_match_finding_strings(nih):
    df = pd.read_csv(require_shared(NIH_CSV))
    assert len(nih) == len(df) == 112_120
    assert nih.class_names == list(NIH_FINDINGS) and "No Finding" not in nih.class_names
    raw = df["Finding Labels"].str.split("|").explode().value_counts()
    rename = {"Effusion": "Pleural Effusion", "Pleural_Thickening": "Pleural Thickening"}
    expected = {rename.get(k, k): int(v) for k, v in raw.items() if k != "No Finding"}
    label, mask = arrays(nih)
    assert dict(zip(nih.class_names, label.sum(axis=0).astype(int).tolist())) == expected
    assert expected["Infiltration"] == 19_894 and expected["Hernia"] == 227
    assert int((label.sum(axis=1) == 0).sum()) == int(raw["No Finding"]) == 60_361
    assert (mask == 1).all()
    first = nih.records[0]
    assert first["image"] == "/data/nih/00000001_000.png" and first["patient_id"] == "00000001"
    assert first["view"] == "PA" and first["label"][NIH_FINDINGS.index("Cardiomegaly")] == 1
    assert len({r["patient_id"] for r in nih.records}) == df["Patient ID"].nunique() == 30_805


@pytest.mark.shared_data
def test_nih_boxes_attached(nih):
    raw = pd.read_csv(require_shared(NIH_BBOX))
    boxes = read_nih_boxes(require_shared(NIH_BBOX))
    assert sum(map(len, boxes.values())) == len(raw) == 984
    assert len(boxes) == raw["Image Index"].nunique() == 880
    attached = [b for r in nih.records for b in r.get("boxes", [])]
    assert len(attached) == 984
    labels = pd.Series([b["label"] for b in attached]).value_counts().to_dict()
    assert labels == {
        "Atelectasis": 180, "Pleural Effusion": 153, "Cardiomegaly": 146, "Infiltration": 123,
        "Pneumonia": 120, "Pneumothorax": 98, "Mass": 85, "Nodule": 79,
    }
    record = next(r for r in nih.records if r["image"].endswith("00013118_008.png"))
    x, y, w, h = raw.iloc[0, 2:6].astype(float)
    assert {"label": "Atelectasis", "box": pytest.approx([x, y, x + w, y + h])} in record["boxes"]
    # in the real files, every boxed finding is also a label of its image
    boxed = [(r, b["label"]) for r in nih.records for b in r.get("boxes", [])]
    assert all(r["label"][NIH_FINDINGS.index(finding)] == 1 for r, finding in boxed)


@pytest.mark.shared_data
def test_nih_check_files_against_sample_folder(tmp_path):
    sample_root = require_shared("nih_sample")
    with pytest.raises(CXRDataError) as exc_info:
        read_nih(require_shared(NIH_CSV), sample_root)
    assert_error(exc_info, require_shared(NIH_CSV), "112117 of 112120 images do not exist")
    df = pd.read_csv(require_shared(NIH_CSV))
    subset = tmp_path / "Data_Entry_2017_subset.csv.gz"
    df[df["Image Index"].isin(NIH_SAMPLES)].to_csv(subset, index=False)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000002_000.png\n00000099_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000013_003.png\n")
    datalist = read_nih(subset, sample_root, bbox_csv=require_shared(NIH_BBOX))
    assert [Path(r["image"]) for r in datalist.records] == [sample_root / "images" / n for n in NIH_SAMPLES]
    assert all(Path(r["image"]).is_file() for r in datalist.records)
    assert [r["patient_id"] for r in datalist.records] == ["00000001", "00000002", "00000013"]
    assert {k: len(v) for k, v in datalist.splits.items()} == {"train": 2, "test": 1}
    three = split_from_official(datalist, 0.5, seed=0)
    assert set(three) == {"train", "validation", "test"} and not patients_in_several_splits(three)
    assert sum(map(len, three.values())) == 3 and len(three["validation"]) == 1


def test_nih_unknown_finding_and_duplicates(tmp_path):
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text(header + "a.png,Nodule,0,1,50,M,PA\nb.png,Effusion|Flu,0,2,50,M,AP\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_nih(csv, check_files=False)
    assert_error(exc_info, csv, "unknown finding 'Flu'", "'Finding Labels'", "row 2")
    csv.write_text(header + "a.png,Nodule,0,1,50,M,PA\na.png,Nodule,0,1,50,M,PA\nb.png,Mass,0,2,50,M,PA\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_nih(csv, check_files=False)
    assert_error(exc_info, csv, "1 duplicate rows with the same 'Image Index'", "'a.png'", "row 1", "row 2")


# ----------------------------------------------------------------------------- VinDr-CXR (real)


@pytest.mark.shared_data
def test_vindr_majority_and_any_votes():
    raw = pd.read_csv(require_shared(VINDR_CSV))
    majority = read_vindr(require_shared(VINDR_CSV), "/data/vindr", check_files=False)
    any_vote = read_vindr(require_shared(VINDR_CSV), "/data/vindr", vote="any", check_files=False)
    assert len(majority) == len(any_vote) == raw["image_id"].nunique() == 15_000
    assert majority.class_names == list(VINDR_FINDINGS)
    # independent count: per image and class, distinct radiologists; per image, radiologists
    n_rads = raw.groupby("image_id")["rad_id"].nunique()
    findings = raw[raw["class_name"] != "No finding"]
    votes = findings.groupby(["image_id", "class_name"])["rad_id"].nunique().reset_index(name="votes")
    votes["n"] = votes["image_id"].map(n_rads)
    names = {name: canonical_finding(name) for name in votes["class_name"].unique()}
    expect_majority = votes[votes["votes"] > votes["n"] / 2]["class_name"].map(names).value_counts().to_dict()
    expect_any = votes["class_name"].map(names).value_counts().to_dict()
    for datalist, expected in ((majority, expect_majority), (any_vote, expect_any)):
        label, mask = arrays(datalist)
        counts = dict(zip(datalist.class_names, label.sum(axis=0).astype(int).tolist()))
        normal = counts.pop("No Finding")
        assert counts == {c: expected.get(c, 0) for c in counts}
        assert normal == int((label[:, :-1].sum(axis=1) == 0).sum()) and (mask == 1).all()
    label_m, _ = arrays(majority)
    assert dict(zip(majority.class_names, label_m.sum(axis=0).astype(int).tolist()))["No Finding"] == 10_648
    assert expect_majority["Aortic Enlargement"] == 2_346 and expect_any["Aortic Enlargement"] == 3_067
    assert (arrays(any_vote)[0] >= label_m)[:, :-1].all()
    assert arrays(read_vindr(require_shared(VINDR_CSV), vote=2, check_files=False))[0].tolist() == label_m.tolist()
    # boxes: all boxes of findings that won the vote
    positive = votes[votes["votes"] > votes["n"] / 2][["image_id", "class_name"]]
    expected_boxes = len(findings.merge(positive, on=["image_id", "class_name"]))
    assert sum(len(r.get("boxes", [])) for r in majority.records) == expected_boxes
    record = next(r for r in majority.records if r["patient_id"] == "9a5094b2563a1ef3ff50dc5c7ff71345")
    assert record["image"] == "/data/vindr/9a5094b2563a1ef3ff50dc5c7ff71345.dicom"
    box = {"label": "Cardiomegaly", "box": [691.0, 1375.0, 1653.0, 1831.0], "rad_id": "R10"}
    assert box in record["boxes"]


def test_vindr_finds_dcm_files_and_rejects_unknown_class(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "img1,Nodule/Mass,8,R1,1,2,3,4\nimg1,Nodule/Mass,8,R2,1,2,3,5\nimg1,Other lesion,9,R3,5,5,6,6\n"
        "img2,No finding,14,R1,,,,\n"
    )
    (tmp_path / "train").mkdir()
    for name in ("img1.dcm", "img2.dicom"):
        (tmp_path / "train" / name).write_bytes(b"")
    datalist = read_vindr(csv)
    assert [Path(r["image"]).name for r in datalist.records] == ["img1.dcm", "img2.dicom"]
    label, _ = arrays(datalist)
    # 2 of 3 radiologists marked Nodule/Mass, 1 of 3 Other Lesion
    assert label[0].tolist() == [1.0 if c == "Nodule/Mass" else 0.0 for c in VINDR_FINDINGS]
    assert label[1].tolist() == [1.0 if c == "No Finding" else 0.0 for c in VINDR_FINDINGS]  # 1 of 1
    assert [b["rad_id"] for b in datalist.records[0]["boxes"]] == ["R1", "R2"]
    csv.write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "img1,Effusion,1,R1,1,2,3,4\nimg1,Mass,1,R2,1,2,3,4\n"
    )
    with pytest.raises(CXRDataError) as exc_info:
        read_vindr(csv, check_files=False)
    assert_error(exc_info, csv, "'Mass' is not a VinDr-CXR class", "row 2")


# ----------------------------------------------------------------------------- MedMNIST


@pytest.mark.shared_data
def test_pneumoniamnist_official_splits():
    datalist = read_medmnist(require_shared("pneumoniamnist/pneumoniamnist.npz"))
    assert datalist.task == "multiclass" and datalist.class_names == ["Normal", "Pneumonia"]
    assert {k: len(v) for k, v in datalist.splits.items()} == {"train": 4708, "validation": 524, "test": 624}
    assert len(datalist) == 4708 + 524 + 624
    counts = {k: arrays(v)[0].sum(axis=0).astype(int).tolist() for k, v in datalist.splits.items()}
    assert counts == {"train": [1214, 3494], "validation": [135, 389], "test": [234, 390]}
    record = datalist.splits["test"][3]
    assert record["image"].shape == (28, 28) and record["image"].dtype == np.uint8
    assert record["patient_id"] == "test-3" and record["view"] == "UNKNOWN"
    assert len({r["patient_id"] for r in datalist.records}) == len(datalist)


def write_chestmnist(path: Path, size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays_ = {}
    for split, n in (("train", 12), ("val", 3), ("test", 5)):
        arrays_[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays_[f"{split}_labels"] = (rng.random((n, 14)) < 0.2).astype(np.uint8)
    np.savez(path, **arrays_)
    return arrays_


def test_chestmnist_generated(tmp_path):
    written = write_chestmnist(tmp_path / "chestmnist_64.npz")
    np.savez(tmp_path / "anything.npz", **written)  # flavour from the label shape
    for name in ("chestmnist_64.npz", "anything.npz"):
        datalist = read_medmnist(tmp_path / name)
        assert datalist.task == "multilabel" and datalist.class_names == list(NIH_FINDINGS)
        assert {k: len(v) for k, v in datalist.splits.items()} == {"train": 12, "validation": 3, "test": 5}
        record = datalist.splits["validation"][2]
        assert np.array_equal(record["image"], written["val_images"][2]) and record["image"].shape == (64, 64)
        assert record["label"] == written["val_labels"][2].astype(float).tolist()
        assert record["patient_id"] == "validation-2"
        assert datalist.records[12] is datalist.splits["validation"][0]


def test_medmnist_bad_files(tmp_path):
    written = write_chestmnist(tmp_path / "chestmnist.npz")
    bad = dict(written, train_labels=written["train_labels"] * 2)
    np.savez(tmp_path / "bad_labels.npz", **bad)
    with pytest.raises(CXRDataError) as exc_info:
        read_medmnist(tmp_path / "bad_labels.npz")
    assert_error(exc_info, tmp_path / "bad_labels.npz", "unknown label value 2", "train_labels")
    np.savez(tmp_path / "partial.npz", train_images=written["train_images"])
    with pytest.raises(CXRDataError) as exc_info:
        read_medmnist(tmp_path / "partial.npz")
    assert_error(exc_info, tmp_path / "partial.npz", "missing key(s)", "'train_labels'", "'test_images'")
    with pytest.raises(CXRDataError) as exc_info:
        read_medmnist(tmp_path / "missing.npz")
    assert_error(exc_info, tmp_path / "missing.npz", "does not exist")


@pytest.mark.parametrize("damage", ["zero bytes", "truncated", "cut member", "empty train", "empty val"])
def test_medmnist_damaged_or_empty_files_are_named(tmp_path, damage):
    written = write_chestmnist(tmp_path / "good.npz")
    np.savez_compressed(tmp_path / "compressed.npz", **written)
    path = tmp_path / "chestmnist.npz"
    if damage == "zero bytes":
        path.write_bytes(b"")
        expected = "empty file (0 bytes)"
    elif damage == "truncated":
        path.write_bytes((tmp_path / "good.npz").read_bytes()[:5000])
        expected = "truncated or damaged"
    elif damage == "cut member":  # the zip directory survives, a compressed member's data does not
        data = bytearray((tmp_path / "compressed.npz").read_bytes())
        data[200:1200] = bytes(1000)
        path.write_bytes(bytes(data))
        expected = "cannot be read as a MedMNIST .npz"
    else:
        key = damage.split()[1]
        np.savez(path, **{**written, f"{key}_images": written[f"{key}_images"][:0],
                          f"{key}_labels": written[f"{key}_labels"][:0]})
        split = {"train": "train", "val": "validation"}[key]
        expected = f"{key}_images is empty: the {split} split has no images"
    with pytest.raises(CXRDataError) as exc_info:
        read_medmnist(path)
    assert_error(exc_info, path, expected)


# ----------------------------------------------------------------------------- cxr3 (real) and splits


@pytest.fixture(scope="module")
def cxr3() -> Datalist:
    return read_cxr3(require_shared("cxr3"))


@pytest.mark.shared_data
def test_cxr3_records_and_classes(cxr3):
    assert len(cxr3) == 476 and cxr3.task == "multiclass"
    assert cxr3.class_names == ["Normal", "Pneumonia", "COVID-19"]
    assert arrays(cxr3)[0].sum(axis=0).astype(int).tolist() == [28, 66, 382]
    assert all(Path(r["image"]).is_file() for r in cxr3.records)
    assert {r["view"] for r in cxr3.records} <= set(VIEWS)
    assert len({r["patient_id"] for r in cxr3.records}) == 306


@pytest.mark.shared_data
def test_cxr3_patient_split(cxr3):
    splits = patient_split(cxr3.records, seed=0)
    assert list(splits) == ["train", "validation", "test"]
    assert not patients_in_several_splits(splits)
    assert sorted(r["image"] for s in splits.values() for r in s) == sorted(r["image"] for r in cxr3.records)
    sizes = {k: len(v) for k, v in splits.items()}
    assert all(sizes.values()), sizes
    assert abs(sizes["train"] / 476 - 0.7) < 0.05 and abs(sizes["test"] / 476 - 0.2) < 0.05
    for records in splits.values():  # stratified: every class in every split
        assert (arrays(records)[0].sum(axis=0) > 0).all()
    again = patient_split(list(reversed(cxr3.records)), seed=0)
    def images(split):
        return {k: sorted(r["image"] for r in v) for k, v in split.items()}

    assert images(again) == images(splits)
    other = patient_split(cxr3.records, seed=1)
    assert [r["image"] for r in other["validation"]] != [r["image"] for r in splits["validation"]]


def test_cxr3_unknown_label(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "image,patient_id,label,finding,view,sex,age,source\n"
        "images/a.png,p1,covid,COVID-19,PA,F,50,x\nimages/b.png,p2,flu,Flu,AP,M,40,x\n"
    )
    with pytest.raises(CXRDataError) as exc_info:
        read_cxr3(tmp_path, check_files=False)
    assert_error(exc_info, tmp_path / "metadata.csv", "unknown value 'flu'", "column 'label'", "row 2")


def test_patient_split_keeps_patients_together_on_multilabel():
    rng = np.random.default_rng(3)
    records = [
        {
            "image": f"{p}_{i}.png",
            "patient_id": f"p{p}",
            "label": (rng.random(4) < 0.3).astype(float).tolist(),
            "label_mask": [1.0] * 4,
        }
        for p in range(200)
        for i in range(int(rng.integers(1, 6)))
    ]
    splits = patient_split(records, {"train": 0.8, "test": 0.2}, seed=5)
    assert not patients_in_several_splits(splits)
    assert abs(len(splits["test"]) / len(records) - 0.2) < 0.03
    assert splits == patient_split(records, {"train": 0.8, "test": 0.2}, seed=5)
    tiny = patient_split(records[:3], seed=0)
    assert sum(map(len, tiny.values())) == 3
    with pytest.raises(ValueError):
        patient_split(records, {"train": 0.8, "test": 0.3})


# ----------------------------------------------------------------------------- generic CSV


def test_csv_datalist_multilabel(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / "imgs" / name).write_bytes(b"")
    csv = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "image": ["imgs/a.png", "imgs/b.png", "imgs/c.png"],
            "Nodule": [1, 0, None],
            "Effusion": [0.0, 1.0, 1.0],
            "pid": ["x", "x", "y"],
            "view": ["PA", "ap", None],
        }
    ).to_csv(csv, index=False)
    datalist = read_csv_datalist(
        csv, label_columns=["Nodule", "Effusion"], patient_column="pid", view_column="view"
    )
    assert datalist.task == "multilabel" and datalist.class_names == ["Nodule", "Effusion"]
    label, mask = arrays(datalist)
    assert label.tolist() == [[1, 0], [0, 1], [0, 1]] and mask.tolist() == [[1, 1], [1, 1], [0, 1]]
    assert [r["view"] for r in datalist.records] == ["PA", "AP", "UNKNOWN"]
    assert [r["patient_id"] for r in datalist.records] == ["x", "x", "y"]
    assert datalist.records[0]["image"] == str(tmp_path / "imgs" / "a.png")
    gz = tmp_path / "labels.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write(csv.read_text())
    assert read_csv_datalist(gz, label_columns=["Nodule", "Effusion"]).records[2]["patient_id"] == "c"


def test_csv_datalist_class_names(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image,diagnosis\n/abs/a.png,pneumonia\nb.png,normal\nc.png,covid\n")
    datalist = read_csv_datalist(csv, class_column="diagnosis", check_files=False, allow_outside_paths=True)
    assert datalist.task == "multiclass" and datalist.class_names == ["covid", "normal", "pneumonia"]
    assert arrays(datalist)[0].argmax(axis=1).tolist() == [2, 1, 0]
    assert datalist.records[0]["image"] == "/abs/a.png"
    order = ["normal", "pneumonia", "covid"]
    ordered = read_csv_datalist(csv, class_column="diagnosis", class_names=order, check_files=False,
                                allow_outside_paths=True)
    assert arrays(ordered)[0].argmax(axis=1).tolist() == [1, 0, 2]
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(csv, class_column="diagnosis", class_names=order[:2], check_files=False,
                          allow_outside_paths=True)
    assert_error(exc_info, csv, "unknown value 'covid'", "column 'diagnosis'", "row 3")
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(csv, class_column="diagnosis", allow_outside_paths=True)
    assert_error(exc_info, csv, "3 of 3 images do not exist", "/abs/a.png")
    with pytest.raises(CXRDataError) as exc_info:  # by default the absolute path elsewhere is refused
        read_csv_datalist(csv, class_column="diagnosis", check_files=False)
    assert_error(exc_info, csv, "1 image path(s) in column 'image' leave the data folder", "'/abs/a.png' at row 1")


def test_csv_datalist_bad_inputs(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image,Nodule\na.png,1\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(csv, label_columns=["Nodule", "Mass"], patient_column="patient", check_files=False)
    assert_error(exc_info, csv, "missing column(s) ['Mass', 'patient']")
    csv.write_text("image,Nodule\na.png,1\nb.png,0\na.png,1\nb.png,0\nc.png,1\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(csv, label_columns=["Nodule"], check_files=False)
    example = "'a.png' at row 1 (line 2) and row 3 (line 4)"
    assert_error(exc_info, csv, "2 duplicate rows with the same 'image'", example)
    csv.write_text("image,Nodule\na.png,1\nb.png,yes\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(csv, label_columns=["Nodule"], check_files=False)
    assert_error(exc_info, csv, "unknown label value 'yes'", "column 'Nodule'", "row 2")
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(tmp_path / "absent.csv.gz", label_columns=["Nodule"])
    assert_error(exc_info, tmp_path / "absent.csv.gz", "file does not exist")


# ----------------------------------------------------------------------------- image folders


def write_png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_image_folder_per_class(tmp_path):
    for name in ("NORMAL/b.png", "NORMAL/a.PNG", "PNEUMONIA/c.jpeg", "PNEUMONIA/notes.txt"):
        write_png(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    datalist = read_image_folder(tmp_path, extensions=(".png", ".jpeg"))
    assert datalist.task == "multiclass" and datalist.class_names == ["NORMAL", "PNEUMONIA"]
    assert [Path(r["image"]).name for r in datalist.records] == ["a.PNG", "b.png", "c.jpeg"]
    assert arrays(datalist)[0].tolist() == [[1, 0], [1, 0], [0, 1]]
    assert [r["patient_id"] for r in datalist.records] == ["a", "b", "c"] and datalist.splits == {}
    # by default every file of a class folder is a record: the one the loader refuses is not passed over
    every = read_image_folder(tmp_path)
    assert [Path(r["image"]).name for r in every.records] == ["a.PNG", "b.png", "c.jpeg", "notes.txt"]


def test_image_folder_kermany_layout(tmp_path):
    files = {
        "train/NORMAL/IM-0115-0001.jpeg": "IM-0115",
        "train/NORMAL/NORMAL2-IM-1427-0001.jpeg": "NORMAL2-IM-1427",
        "train/PNEUMONIA/person1_bacteria_1.jpeg": "person1",
        "train/PNEUMONIA/person1_virus_6.jpeg": "person1",
        "val/NORMAL/IM-0200-0001.jpeg": "IM-0200",
        "test/PNEUMONIA/person100_virus_184.jpeg": "person100",
    }
    for name in files:
        write_png(tmp_path / name)
    datalist = read_image_folder(tmp_path, patient_id_from="kermany")
    assert datalist.class_names == ["NORMAL", "PNEUMONIA"]
    assert {k: len(v) for k, v in datalist.splits.items()} == {"train": 4, "validation": 1, "test": 1}
    by_name = {Path(r["image"]).relative_to(tmp_path).as_posix(): r["patient_id"] for r in datalist.records}
    assert by_name == files
    assert read_image_folder(tmp_path, patient_id_from=r"^(\w+?)[_-]").records[0]["patient_id"] == "IM"
    with pytest.raises(CXRDataError) as exc_info:
        read_image_folder(tmp_path, patient_id_from=r"^patient(\d+)")
    assert_error(exc_info, tmp_path, "6 file names do not match")
    with pytest.raises(CXRDataError) as exc_info:
        read_image_folder(tmp_path / "absent")
    assert_error(exc_info, tmp_path / "absent", "does not exist")


# ----------------------------------------------------------------------------- paths that leave the data folder


def _outside_rows(root: Path) -> list[str]:
    outside = root.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    write_png(outside / "x.png")
    return ["../elsewhere/x.png", str(outside / "x.png")]


def _reader_cases(root: Path, paths: list[str]) -> dict:
    """Every CSV-based reader, given ``paths`` as its image paths (one row each, plus one good row)."""
    root.mkdir(parents=True, exist_ok=True)
    write_png(root / "good.png")
    cases = {}
    lines = "\n".join(f"{p},normal" for p in ["good.png", *paths])
    (root / "labels.csv").write_text("image,label\n" + lines + "\n")
    cases["csv"] = (lambda **kw: read_csv_datalist(root / "labels.csv", class_column="label", **kw), "image")
    (root / "metadata.csv").write_text("image,patient_id,label,view\n" + "\n".join(
        f"{p},p{i},normal,PA" for i, p in enumerate(["good.png", *paths])) + "\n")
    cases["cxr3"] = (lambda **kw: read_cxr3(root, **kw), "image")
    header = ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
    (root / "train.csv").write_text(",".join(header) + "\n" + "\n".join(
        ",".join([f"{p.replace('x.png', f'patient0000{i}/study1/x.png')}", "Frontal", "PA", "1.0"]
                 + [""] * (len(header) - 4)) for i, p in enumerate(paths)) + "\n")
    cases["chexpert"] = (lambda **kw: read_chexpert(root / "train.csv", root, **kw), "Path")
    (root / "nih.csv").write_text("Image Index,Finding Labels,Patient ID,View Position\n" + "\n".join(
        f"{p},No Finding,{i},PA" for i, p in enumerate(paths)) + "\n")
    cases["nih"] = (lambda **kw: read_nih(root / "nih.csv", root, **kw), "Image Index")
    (root / "vindr.csv").write_text("image_id,class_name,rad_id,x_min,y_min,x_max,y_max\n" + "\n".join(
        f"{p[:-4]},No finding,R1,,,," for p in paths) + "\n")
    cases["vindr"] = (lambda **kw: read_vindr(root / "vindr.csv", root, **kw), "image_id")
    (root / "padchest.csv").write_text("ImageID,ImageDir,PatientID,Projection,MethodLabel,Labels\n" + "\n".join(
        f"{p.rsplit('/', 1)[-1]},{p.rsplit('/', 1)[0]},p{i},PA,Physician,\"['normal']\"" for i, p in enumerate(paths))
        + "\n")
    cases["padchest"] = (lambda **kw: read_padchest(root / "padchest.csv", root, **kw), "ImageDir/ImageID")
    return cases


@pytest.mark.parametrize("reader", ["csv", "cxr3", "chexpert", "nih", "vindr", "padchest"])
def test_image_paths_that_leave_the_data_folder_are_refused_by_default(tmp_path, reader):
    root = tmp_path / "data"
    root.mkdir()
    paths = _outside_rows(root)
    read, column = _reader_cases(root, paths)[reader]
    for check_files in (True, False):  # refused before any file is touched
        with pytest.raises(CXRDataError) as exc_info:
            read(check_files=check_files, missing="keep")
        message = str(exc_info.value)
        first = 2 if reader in ("csv", "cxr3") else 1  # these two files start with a good row
        assert "2 image path(s)" in message and "leave the data folder" in message and f"column {column!r}" in message
        assert f"at row {first} (line {first + 1})" in message and f"at row {first + 1}" in message, message
        assert "allow_outside_paths" in message
    datalist = read(check_files=False, allow_outside_paths=True)  # the documented switch
    assert any("elsewhere" in r["image"] for r in datalist.records)


def test_named_image_root_holds_paths_that_would_leave_the_label_folder(tmp_path):
    images = tmp_path / "images"
    write_png(images / "a.png")
    labels = tmp_path / "labels" / "labels.csv"
    labels.parent.mkdir()
    labels.write_text("image,label\na.png,normal\n../labels/b.png,covid\n")
    with pytest.raises(CXRDataError) as exc_info:
        read_csv_datalist(labels, images, class_column="label", check_files=False)
    assert_error(exc_info, labels, "'../labels/b.png' at row 2", str(images))
    labels.write_text("image,label\na.png,normal\nsub/../a2.png,covid\n")  # '..' that stays inside is fine
    assert len(read_csv_datalist(labels, images, class_column="label", check_files=False)) == 2


# ----------------------------------------------------------------------------- empty label files, missing files kept


@pytest.mark.parametrize("reader", ["csv", "cxr3", "chexpert", "nih", "vindr", "padchest"])
def test_label_file_with_only_a_header_is_refused_by_name(tmp_path, reader):
    root = tmp_path / "data"
    cases = _reader_cases(root, ["a.png"])
    for name in ("labels.csv", "metadata.csv", "train.csv", "nih.csv", "vindr.csv", "padchest.csv"):
        file = root / name
        file.write_text(file.read_text().splitlines()[0] + "\n")
    read, _ = cases[reader]
    with pytest.raises(CXRDataError, match="no data rows") as exc_info:
        read(check_files=False)
    assert str(root) in str(exc_info.value)


def test_missing_images_are_kept_for_the_check_with_missing_keep(tmp_path):
    root = tmp_path / "data"
    cases = _reader_cases(root, ["a.png", "b.png"])
    write_png(root / "images" / "a.png")  # NIH finds it anywhere below the root; b.png is missing
    for reader in ("csv", "nih"):
        read, _ = cases[reader]
        with pytest.raises(CXRDataError, match="do not exist"):
            read()
        kept = [r["image"] for r in read(missing="keep").records]
        assert any(p.endswith("b.png") and not os.path.exists(p) for p in kept), (reader, kept)


# ----------------------------------------------------------------------------- folder-per-class layouts


def test_image_folder_with_an_empty_class_or_a_single_class_is_an_error(tmp_path):
    write_png(tmp_path / "one" / "NORMAL" / "a.png")
    with pytest.raises(CXRDataError) as exc_info:
        read_image_folder(tmp_path / "one")
    assert_error(exc_info, tmp_path / "one", "only one class folder ('NORMAL')", "at least two")
    write_png(tmp_path / "two" / "NORMAL" / "a.png")
    (tmp_path / "two" / "PNEUMONIA").mkdir()
    (tmp_path / "two" / "PNEUMONIA" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    with pytest.raises(CXRDataError) as exc_info:
        read_image_folder(tmp_path / "two")
    assert_error(exc_info, tmp_path / "two" / "PNEUMONIA", "empty class folder", "'PNEUMONIA'")
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            write_png(tmp_path / "kermany" / split / label / f"{split}_{label}.png")
    (tmp_path / "kermany" / "val" / "NORMAL").mkdir(parents=True)
    with pytest.raises(CXRDataError) as exc_info:
        read_image_folder(tmp_path / "kermany")
    assert_error(exc_info, tmp_path / "kermany" / "val" / "NORMAL", "empty class folder")


# ----------------------------------------------------------------------------- PadChest


def test_padchest_terms_map_to_the_shared_vocabulary():
    assert set(PADCHEST_TERMS.values()) == set(PADCHEST_FINDINGS)
    for term in ("pleural effusion", "cardiomegaly", "pneumonia", "nodule", "atelectasis", "consolidation",
                 "pneumothorax", "emphysema", "normal", "pulmonary edema", "infiltrates", "pulmonary fibrosis"):
        assert PADCHEST_TERMS[term] == canonical_finding(term), term  # a synonym of the vocabulary, the same class
    assert PADCHEST_TERMS["lobar atelectasis"] == "Atelectasis" and "subcutaneous emphysema" not in PADCHEST_TERMS


def _padchest_csv(path: Path, rows: list[tuple]) -> Path:
    frame = pd.DataFrame(rows, columns=["ImageID", "ImageDir", "PatientID", "Projection", "MethodLabel", "Labels"])
    frame.insert(0, "Report", "texto libre, con comas")  # a free-text column the reader does not need
    frame.to_csv(path, index=False)
    return path


def test_padchest_reader_on_generated_images(tmp_path):
    from bundle.data.io import PartialRangeWarning, load_cxr

    rows = [
        ("a.png", "0", "P1", "PA", "Physician", "['normal']"),
        ("b.png", "0", "P1", "L", "Physician", "['cardiomegaly', ' pleural effusion']"),
        ("c.png", "1", "P2", "AP_horizontal", "RNN_model", "['loculated pleural effusion', 'COPD signs']"),
        ("d.png", "1", "P3", "AP", "RNN_model", "['exclude']"),
        ("e.png", "1", "P3", "PA", "Physician", "['suboptimal study', 'nodule']"),
        ("f.png", "2", "P4", "PA", "Physician", None),
        ("g.png", "2", "P4", "PA", "Physician", "['nodule', ' normal', 'NSG tube']"),
    ]
    csv = _padchest_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", rows)
    for name, folder, *_ in rows:  # 12-bit data in 16-bit PNGs without sBIT, as PadChest ships them
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)).save(tmp_path / folder / name)
    datalist = read_padchest(csv)
    assert datalist.class_names == list(PADCHEST_FINDINGS) and datalist.task == "multilabel"
    assert [Path(r["image"]).relative_to(tmp_path).as_posix() for r in datalist.records] == [
        "0/a.png", "1/c.png", "2/g.png"]
    positive = [{c for c, v in zip(PADCHEST_FINDINGS, r["label"]) if v} for r in datalist.records]
    assert positive == [{"No Finding"}, {"Pleural Effusion"}, {"Nodule", "Support Devices"}]  # a finding beats 'normal'
    assert [r["view"] for r in datalist.records] == ["PA", "AP", "PA"]
    assert [r["patient_id"] for r in datalist.records] == ["P1", "P2", "P4"]
    assert datalist.dropped == {"with no labels": 1, "marked 'exclude'": 1, "marked 'suboptimal study'": 1,
                                "with a projection other than PA, AP, AP_horizontal": 1}
    lateral = read_padchest(csv, projections=["L"])
    assert [Path(r["image"]).name for r in lateral.records] == ["b.png"] and lateral.records[0]["view"] == "LATERAL"
    physician = read_padchest(csv, projections=None, physician_only=True)
    assert [Path(r["image"]).name for r in physician.records] == ["a.png", "b.png", "g.png"]
    assert physician.dropped["not labelled by a physician (MethodLabel)"] == 1
    with pytest.warns(PartialRangeWarning, match="12-bit"):
        assert load_cxr(datalist.records[0]["image"]).max() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="unknown PadChest projection"):
        read_padchest(csv, projections=["LATERAL"])


@pytest.mark.parametrize("labels", ["__import__('os').system('touch PWNED')", "['normal'", "[1, 2]", "{'a': 1}"])
def test_padchest_labels_are_parsed_as_literals_never_run(tmp_path, labels, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = _padchest_csv(tmp_path / "padchest_labels.csv", [("a.png", "0", "P1", "PA", "Physician", "['normal']"),
                                                           ("b.png", "0", "P2", "PA", "Physician", labels)])
    with pytest.raises(CXRDataError) as exc_info:
        read_padchest(csv, check_files=False)
    assert_error(exc_info, csv, "'Labels' at row 2 (line 3) is not a list of terms")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.shared_data
def test_padchest_real_label_file_at_full_scale():
    """The real 160,861-row file, no images: the counts every filter leaves (docs/inputs.md quotes them)."""
    path = require_shared(PADCHEST_CSV)
    frontal = read_padchest(path, "/data/padchest", check_files=False)
    assert len(frontal) == 107586 and len({r["patient_id"] for r in frontal.records}) == 66004
    assert frontal.dropped == {"with no labels": 880, "marked 'exclude'": 1312, "marked 'suboptimal study'": 1839,
                               "with a projection other than PA, AP, AP_horizontal": 49244}
    record = frontal.records[0]
    assert record["image"] == "/data/padchest/0/20536686640136348236148679891455886468_k6ga29.png"
    assert record["view"] == "PA" and record["label"][PADCHEST_FINDINGS.index("No Finding")] == 1.0
    label = arrays(frontal)[0]
    counts = dict(zip(PADCHEST_FINDINGS, label.sum(axis=0).astype(int).tolist()))
    assert counts["No Finding"] == 35979 and counts["Pleural Effusion"] == 6849 and counts["Cardiomegaly"] == 9661
    assert not (label[:, 0].astype(bool) & label[:, 1:].any(axis=1)).any()  # "No Finding" never with a finding
    physician = read_padchest(path, "/data/padchest", projections=None, physician_only=True, check_files=False)
    assert len(physician) == 38426 and len({r["patient_id"] for r in physician.records}) == 24106
