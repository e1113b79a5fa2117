"""Class balancing by re-sampling or loss weights."""

from __future__ import annotations

from collections import Counter

import pytest

from bundle.data import balanced_class_weights, balanced_sampler
from bundle.data.balance import record_classes


def _records(counts):
    eye = {0: [1.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0], 2: [0.0, 0.0, 1.0]}
    return [{"label": eye[c], "label_mask": [1.0] * 3} for c, n in enumerate(counts) for _ in range(n)]


def test_oversampling_balances_classes_in_expectation():
    records = _records([300, 60, 20])
    drawn = Counter(record_classes(records, "multiclass")[list(balanced_sampler(records, "multiclass", "oversample"))])
    assert sum(drawn.values()) == 380
    assert all(abs(n / 380 - 1 / 3) < 0.06 for n in drawn.values())


def test_undersampling_cuts_every_class_to_the_rarest():
    records = _records([300, 60, 20])
    indices = list(balanced_sampler(records, "multiclass", "undersample", seed=1))
    assert len(indices) == 60 and len(set(indices)) == 60  # without replacement
    drawn = Counter(record_classes(records, "multiclass")[indices])
    assert all(8 <= n <= 32 for n in drawn.values())


def test_no_sampling_and_unknown_mode():
    assert balanced_sampler(_records([5, 5, 5]), "multiclass", "none") is None
    with pytest.raises(ValueError, match="sampling"):
        balanced_sampler(_records([5, 5, 5]), "multiclass", "smote")


def test_balanced_weights():
    assert balanced_class_weights(_records([30, 10, 20]), "multiclass") == pytest.approx([60 / 90, 60 / 30, 60 / 60])
    multilabel = [{"label": [1.0, 0.0], "label_mask": [1.0, 1.0]}, {"label": [0.0, 0.0], "label_mask": [1.0, 0.0]},
                  {"label": [0.0, 1.0], "label_mask": [1.0, 1.0]}, {"label": [0.0, 0.0], "label_mask": [1.0, 1.0]}]
    # finding 0: 1 positive, 3 negatives; finding 1: 1 positive, 2 known negatives (one unknown)
    assert balanced_class_weights(multilabel, "multilabel") == pytest.approx([3.0, 2.0])
    assert list(record_classes(multilabel, "multilabel")) == [0, 2, 1, 2]
