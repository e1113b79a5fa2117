"""The one record format every reader produces.

A *datalist* is a list of MONAI-style dictionaries, one per image::

    {
        "image": "/data/nih/images/00000001_000.png",   # path, or a numpy array for in-memory sets
        "label": [0.0, 1.0, ...],       # float vector over ``class_names`` (multi-hot or one-hot)
        "label_mask": [1.0, 0.0, ...],  # 1 = label known, 0 = unknown (excluded from losses and metrics)
        "patient_id": "00000001",
        "view": "PA",                   # PA, AP, LATERAL, LL or UNKNOWN
        # optional: "boxes": [{"label": "Nodule", "box": [x_min, y_min, x_max, y_max]}], in image pixels
    }

Readers return a :class:`Datalist` (records, class names, task); data sets with an
official split fill ``splits`` with record lists per split name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Datalist", "Task", "VIEWS"]

Task = Literal["multilabel", "multiclass"]
VIEWS = ("PA", "AP", "LATERAL", "LL", "UNKNOWN")


@dataclass
class Datalist:
    """Records plus what is needed to interpret their label vectors."""

    records: list[dict[str, Any]]
    class_names: list[str]
    task: Task = "multilabel"
    # official splits when the data set defines them ({"train": [...], "validation": [...], "test": [...]})
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # rows of the label file left out on purpose, by reason ({"marked 'exclude'": 1312, ...}), for the summary
    dropped: dict[str, int] = field(default_factory=dict)
    source: str | None = None  # the label file (or folder) read, for messages

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
