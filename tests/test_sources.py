"""`load_splits`: the config's `dataset` + `dataset_dir` -> train / validation / test."""

from __future__ import annotations

import pytest

from bundle.data import CXRDataError, load_splits
from conftest import require_shared


def test_cxr3_patient_level_split_through_the_registry():
    splits = load_splits("cxr3", require_shared("cxr3"), seed=0)
    assert splits.task == "multiclass" and splits.class_names == ["Normal", "Pneumonia", "COVID-19"]
    patients = [{r["patient_id"] for r in getattr(splits, name)} for name in ("train", "validation", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 476
    again = load_splits("cxr3", require_shared("cxr3"), seed=0)
    assert [r["image"] for r in again.test] == [r["image"] for r in splits.test]


def test_pneumoniamnist_uses_the_official_split():
    splits = load_splits("pneumoniamnist", require_shared("pneumoniamnist"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (4708, 524, 624)
    assert splits.class_names == ["Normal", "Pneumonia"]


def test_synthetic_sets_and_their_tasks(tmp_path):
    findings = load_splits("synthetic", cache_dir=tmp_path, options={"num_images": 20, "source_size": 64})
    binary = load_splits("synthetic_binary", cache_dir=tmp_path, options={"num_images": 20, "source_size": 64})
    assert findings.task == "multilabel" and findings.num_classes == 5
    assert binary.task == "multiclass" and binary.class_names == ["Normal", "Abnormal"]
    assert len(findings.train) + len(findings.validation) + len(findings.test) == 20


def test_bad_names_and_folders_are_reported_by_name(tmp_path):
    with pytest.raises(CXRDataError, match="unknown dataset 'mnist'.*cxr3"):
        load_splits("mnist", tmp_path)
    with pytest.raises(CXRDataError, match="does not exist"):
        load_splits("cxr3", tmp_path / "nowhere")
    with pytest.raises(CXRDataError, match="no pneumoniamnist .npz found"):
        load_splits("pneumoniamnist", tmp_path)


@pytest.mark.shared_data
def test_padchest_is_registered_and_split_by_patient():
    """The real label file as dataset_dir (images under its folder), no image checks: physician-labelled frontals."""
    splits = load_splits("padchest", require_shared("labels/padchest_labels_160K_01.02.19.csv.gz"),
                         options={"check_files": False, "physician_only": True})
    sizes = [len(getattr(splits, name)) for name in ("train", "validation", "test")]
    assert sum(sizes) == 25940 and min(sizes) > 2000 and splits.num_classes == 18
    patients = [{r["patient_id"] for r in getattr(splits, name)} for name in ("train", "validation", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert "left out: 880 rows with no labels, 1,312 rows marked 'exclude'" in splits.summary()
    assert "81,646 rows not labelled by a physician (MethodLabel)" in splits.summary()
