"""The evaluation engine: MONAI's SupervisedEvaluator that keeps the label mask in its output."""

from __future__ import annotations

from typing import Any

from monai.engines import SupervisedEvaluator

from .trainer import LABEL_MASK, batch_to_device

__all__ = ["CXREvaluator"]


class CXREvaluator(SupervisedEvaluator):
    """SupervisedEvaluator whose output also holds ``label_mask`` (ones when the data has none),
    so that metrics leave unknown labels out."""

    def _iteration(self, engine: CXREvaluator, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        output = super()._iteration(engine, batchdata)
        output[LABEL_MASK] = batch_to_device(batchdata, engine.state.device, engine.non_blocking)[2]
        return output
