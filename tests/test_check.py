"""The pre-training data-set check reports every problem at once, each naming its file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bundle.data import CXRDataError, check_records, check_splits
from bundle.data.sources import DataSplits


def _png(path, size=32):
    Image.fromarray((np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture
def records(tmp_path):
    good = _png(tmp_path / "good.png")
    truncated = _png(tmp_path / "truncated.png", 128)
    data = open(truncated, "rb").read()
    open(truncated, "wb").write(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    row = {"label": [1.0, 0.0], "label_mask": [1.0, 1.0]}
    return [
        {"image": good, **row},
        {"image": str(tmp_path / "missing.png"), **row},
        {"image": str(tmp_path / "empty.png"), **row},
        {"image": truncated, **row},
        {"image": good, "label": [1.0, 0.0, 1.0], "label_mask": [1.0, 1.0]},
        {"image": good, "label": [2.0, 0.0], "label_mask": [1.0, 1.0]},
        {"image": np.zeros((8, 8), np.uint8), **row},
    ]


def test_quick_check_finds_missing_empty_and_label_problems(records):
    problems = [str(p) for p in check_records(records, num_classes=2, mode="quick")]
    assert any("missing.png" in p and "does not exist" in p for p in problems)
    assert any("empty.png" in p and "0 bytes" in p for p in problems)
    assert any("label has 3 values, expected 2" in p for p in problems)
    assert any("other than 0/1: [0.0, 2.0]" in p for p in problems)
    assert any("record 6" in p for p in problems)  # an in-memory image smaller than the minimum
    assert not any("truncated.png" in p for p in problems)  # quick mode does not decode


def test_full_check_also_decodes(records):
    problems = [str(p) for p in check_records(records, num_classes=2, mode="full")]
    assert any("truncated.png" in p for p in problems)
    assert not any("good.png" in p and "label" not in p for p in problems)


def test_check_splits_raises_one_error_listing_everything(records):
    splits = DataSplits(records[:4], records[4:], [], ["A", "B"], "multilabel")
    with pytest.raises(CXRDataError) as info:
        check_splits(splits, mode="quick")
    message = str(info.value)
    assert "5 problem(s)" in message and "[train]" in message and "[validation]" in message
    assert check_splits(DataSplits(records[:1], records[:1], records[:1], ["A", "B"], "multilabel")).train
    assert check_splits(splits, mode="off") is splits
