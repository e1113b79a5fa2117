"""The evaluation engine: MONAI's SupervisedEvaluator that keeps the label mask in its output."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import SupervisedEvaluator

from ..data.errors import CXRDataError
from ..keys import Keys
from .trainer import drop_unreadable, flatten_handlers, unshared

__all__ = ["CXREvaluator"]


class CXREvaluator(SupervisedEvaluator):
    """SupervisedEvaluator whose output also holds ``label_mask`` (ones when the data has none),
    so that metrics leave unknown labels out, and which leaves unreadable images out
    (see :func:`~bundle.engines.trainer.drop_unreadable`). ``val_handlers`` may nest and hold
    ``None`` (:func:`~bundle.engines.trainer.flatten_handlers`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["val_handlers"] = flatten_handlers(kwargs.get("val_handlers"))
        super().__init__(*args, **kwargs)

    def _iteration(self, engine: CXREvaluator, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        errors = [error for error in batchdata.get(Keys.ERROR) or [] if error]
        batchdata = drop_unreadable(unshared(batchdata), engine)
        if batchdata is None:  # nothing to score: say which files, as the data errors elsewhere do
            first = str(errors[0]) if errors else "unreadable"
            raise CXRDataError(None, f"every image of an evaluation batch was unreadable ({len(errors)} files; the "
                                     f"first: {first})", advice="fix or remove these files, or run the data check "
                                                                "(scripts/check_dataset.py) to list them all")
        output = super()._iteration(engine, batchdata)
        mask = batchdata.get(Keys.LABEL_MASK)
        label = output[Keys.LABEL]
        output[Keys.LABEL_MASK] = torch.ones_like(label, dtype=torch.float32) if mask is None else mask.to(label.device).float()
        return output
