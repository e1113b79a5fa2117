"""The training engine: MONAI's SupervisedTrainer whose step is the distiller's.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, label)``. Here every stage has a
distiller (:class:`bundle.distill.Distiller`: :class:`~bundle.distill.NoTeacher` when it trains on
hard labels alone), and the step is::

    logits, terms = distiller.forward_train(batch, student_forward)   # every term already weighted
    loss = sum(terms.values())

The trainer knows nothing of teachers: it moves the batch to the device, fills in a label mask
of ones where the data has none, sums and logs the named terms (``engine.state.output["loss_terms"]``),
steps the optimiser (with AMP when asked) and averages the distiller's extra gradients over
processes (DDP only covers the student). Everything else (events, handlers) is MONAI's.

Handler lists may nest and hold ``None`` (:func:`flatten_handlers`): a handler disabled on
the other processes of a multi-GPU run (``_disabled_``) arrives as ``None``, and an overlay
config may add a list of handlers as one item.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from ..distributed import average_gradients
from ..keys import Keys

__all__ = ["CXRTrainer", "batch_to_device", "drop_unreadable", "flatten_handlers", "unshared"]

logger = logging.getLogger(__name__)


def flatten_handlers(handlers: Any) -> list[Any]:
    """``[a, [b, None, c], d]`` -> ``[a, b, c, d]``: nested lists flattened, ``None`` left out."""
    if handlers is None:
        return []
    if not isinstance(handlers, (list, tuple)):
        return [handlers]
    return [h for item in handlers for h in flatten_handlers(item)]


def batch_to_device(batchdata: dict[str, Any], device: torch.device | str, non_blocking: bool = False
                    ) -> dict[str, Any]:
    """The batch with its tensors on the device, labels as floats, and a label mask (ones when the data has none)."""
    batch = {key: value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value
             for key, value in batchdata.items()}
    batch[Keys.LABEL] = batch[Keys.LABEL].float()
    mask = batch.get(Keys.LABEL_MASK)
    batch[Keys.LABEL_MASK] = torch.ones_like(batch[Keys.LABEL]) if mask is None else mask.float()
    return batch


def unshared(batchdata: dict[str, Any]) -> dict[str, Any]:
    """The batch with every tensor but the images copied out of the shared memory a DataLoader worker sent it in.

    Each shared tensor keeps a file descriptor open while it lives, and what the engines hand on (labels,
    masks, recorded soft targets) is kept by handlers for a whole pass (metrics, thresholds, per-image
    scores): one open file per batch and key, so a 25,000-image test split at batch 32 passes a default limit
    of 1,024 open files. The images are used within the iteration and freed; the rest is small.
    """
    return {key: value.clone() if isinstance(value, torch.Tensor) and key != Keys.IMAGE and value.is_shared()
            else value for key, value in batchdata.items()}


def drop_unreadable(batchdata: dict[str, Any], engine: Any = None) -> dict[str, Any] | None:
    """The batch without the samples whose image could not be read (None if none is left).

    With ``skip_bad_records`` the loader records a problem instead of raising
    (``LoadCXRd(on_error="record")``), so that a file the pre-training check could not
    see (``check_data: quick`` does not decode) costs one sample, not the run. Each
    skipped file is logged and kept in ``engine.state.skipped_inputs``.
    """
    errors = batchdata.get(Keys.ERROR)
    if not errors or not any(errors):
        return batchdata
    keep = [i for i, error in enumerate(errors) if not error]
    for error in errors:
        if error:
            logger.warning("skipping an unreadable image: %s", error)
            if engine is not None:
                skipped = getattr(engine.state, "skipped_inputs", [])
                engine.state.skipped_inputs = skipped + [error]
    if not keep:
        return None
    size, index = len(errors), torch.tensor(keep)
    subset: dict[str, Any] = {}
    for key, value in batchdata.items():
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == size:
            subset[key] = value[index]
        elif isinstance(value, (list, tuple)) and len(value) == size:
            subset[key] = [value[i] for i in keep]
        else:
            subset[key] = value
    return subset


def single_loss_output(handler: Any) -> Any:
    """``handler``, with an output transform that gives a 1-tuple (``(loss,)``) made to give the loss itself.

    MONAI's built-in ``--tracking mlflow`` attaches an ``MLFlowHandler`` whose output transform,
    ``from_engine(["loss"], first=True)``, is written for decollated outputs (a list of per-sample
    dicts); on this trainer's batch output (one dict) it returns ``(loss,)``, which MLflow cannot log
    as a number. Unwrapping the 1-tuple keeps that flag working as MONAI documents it (``train_loss``
    per iteration); ``--tracking configs/mlflow.json`` logs the loss terms, parameters and files too.
    """
    from monai.handlers import MLFlowHandler

    if isinstance(handler, MLFlowHandler):
        transform = handler.output_transform

        def unwrapped(output: Any) -> Any:
            value = transform(output)
            return value[0] if isinstance(value, tuple) and len(value) == 1 else value

        handler.output_transform = unwrapped
    return handler


class CXRTrainer(SupervisedTrainer):
    """SupervisedTrainer whose iteration is the distiller's step.

    Args:
        distiller: the stage's :class:`bundle.distill.Distiller` (``NoTeacher`` for hard labels
            alone); it owns the hard-label loss, so ``loss_function`` is not given.
        others: as :class:`monai.engines.SupervisedTrainer`.
    """

    def __init__(self, *args: Any, distiller: torch.nn.Module, **kwargs: Any) -> None:
        kwargs["train_handlers"] = [single_loss_output(h) for h in flatten_handlers(kwargs.get("train_handlers"))]
        kwargs.setdefault("loss_function", distiller)  # MONAI's bookkeeping; the step calls forward_train
        super().__init__(*args, **kwargs)
        self.distiller = distiller

    def _iteration(self, engine: CXRTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batchdata = drop_unreadable(unshared(batchdata), engine)
        if batchdata is None:  # every image of the batch was unreadable: nothing to learn from
            engine.state.output = {Keys.LOSS: torch.zeros((), device=engine.state.device), Keys.LOSS_TERMS: {}}
            return engine.state.output
        batch = batch_to_device(batchdata, engine.state.device, engine.non_blocking)
        engine.state.output = {Keys.IMAGE: batch[Keys.IMAGE], Keys.LABEL: batch[Keys.LABEL],
                               Keys.LABEL_MASK: batch[Keys.LABEL_MASK]}

        def student_forward(images: torch.Tensor) -> torch.Tensor:
            return engine.inferer(images, engine.network)

        def forward_and_loss() -> None:
            logits, terms = engine.distiller.forward_train(batch, student_forward)
            engine.state.output[Keys.PRED] = logits
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            engine.state.output[Keys.LOSS] = torch.stack([t.float() for t in terms.values()]).sum()
            engine.state.output[Keys.LOSS_TERMS] = {name: float(t.detach()) for name, t in terms.items()}
            engine.state.output[Keys.LOSS_TERM_WEIGHTS] = dict(getattr(engine.distiller, "term_weights", {}))
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        def step_done() -> None:
            average_gradients(engine.distiller.extra_parameters())  # adapters are outside DDP
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)

        engine.network.train()
        engine.distiller.train()  # adapters train; a teacher network is not a submodule and stays frozen
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                forward_and_loss()
            engine.scaler.scale(engine.state.output[Keys.LOSS]).backward()
            step_done()
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            forward_and_loss()
            engine.state.output[Keys.LOSS].backward()
            step_done()
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
