"""The evaluation engine: MONAI's SupervisedEvaluator that keeps the label mask in its output."""

from __future__ import annotations

from typing import Any

from monai.engines import SupervisedEvaluator

from .trainer import LABEL_MASK, batch_to_device, drop_unreadable, flatten_handlers

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
        batchdata = drop_unreadable(batchdata, engine)
        if batchdata is None:
            raise ValueError("every image of a validation batch was unreadable; see the warnings above")
        output = super()._iteration(engine, batchdata)
        output[LABEL_MASK] = batch_to_device(batchdata, engine.state.device, engine.non_blocking)[2]
        return output
