"""The training engine: MONAI's SupervisedTrainer with label masks and named loss terms.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, label)``. Chest X-ray
labels come with a mask (unknown findings), and distillation losses are sums of
named terms that users want to see one by one, so ``CXRTrainer`` overrides the
iteration to call ``loss_function(pred, label, label_mask)`` and accepts either a
tensor or a ``{name: tensor}`` dictionary from it (summed into ``loss``; every
term is kept in ``engine.state.output["loss_terms"]`` for the handlers to log).
Everything else (events, AMP, optimiser handling, handlers) is MONAI's.

Handler lists may nest and hold ``None`` (:func:`flatten_handlers`): a stage config
lists the shared handlers of ``configs/common.json`` as one macro, keeps ``train#handlers``
a real list (MONAI's ``--tracking mlflow`` appends to it), and a handler disabled on
the other processes of a multi-GPU run (``_disabled_``) arrives as ``None``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from ..distill.cache import SAMPLE_INDEX  # position in the training list: the key of a teacher-output cache

from ..distributed import average_gradients

__all__ = ["CXRTrainer", "LABEL_MASK", "LOSS_TERMS", "SAMPLE_INDEX", "TEACHER_IMAGE", "ERROR", "drop_unreadable",
           "flatten_handlers"]

logger = logging.getLogger(__name__)

LABEL_MASK = "label_mask"
ERROR = "error"  # set by LoadCXRd(on_error="record"): "" or why the image could not be read
LOSS_TERMS = "loss_terms"
TEACHER_IMAGE = "teacher_image"  # optional: the image as the teacher sees it (e.g. MLCAK's 224 px view of a 28 px input)


def flatten_handlers(handlers: Any) -> list[Any]:
    """``[a, [b, None, c], d]`` -> ``[a, b, c, d]``: nested lists flattened, ``None`` left out."""
    if handlers is None:
        return []
    if not isinstance(handlers, (list, tuple)):
        return [handlers]
    return [h for item in handlers for h in flatten_handlers(item)]


def batch_to_device(batchdata: dict[str, Any], device: torch.device | str, non_blocking: bool = False) -> tuple:
    """Image, label and label mask of a batch on the device (mask of ones when the data has none)."""
    images = batchdata[Keys.IMAGE].to(device, non_blocking=non_blocking)
    labels = batchdata[Keys.LABEL].to(device, non_blocking=non_blocking).float()
    mask = batchdata.get(LABEL_MASK)
    mask = torch.ones_like(labels) if mask is None else mask.to(device, non_blocking=non_blocking).float()
    return images, labels, mask


def drop_unreadable(batchdata: dict[str, Any], engine: Any = None) -> dict[str, Any] | None:
    """The batch without the samples whose image could not be read (None if none is left).

    With ``skip_bad_records`` the loader records a problem instead of raising
    (``LoadCXRd(on_error="record")``), so that a file the pre-training check could not
    see (``check_data: quick`` does not decode) costs one sample, not the run. Each
    skipped file is logged and kept in ``engine.state.skipped_inputs``.
    """
    errors = batchdata.get(ERROR)
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


class CXRTrainer(SupervisedTrainer):
    """SupervisedTrainer whose loss sees the label mask, with optional distillation.

    Args:
        distiller: a :class:`bundle.distill.Distiller` (frozen teacher, soft-label and
            feature terms); None trains on hard labels alone.
        others: as :class:`monai.engines.SupervisedTrainer`; ``loss_function`` is called
            as ``loss_function(logits, labels, label_mask)``.
    """

    def __init__(self, *args: Any, distiller: torch.nn.Module | None = None, **kwargs: Any) -> None:
        kwargs["train_handlers"] = flatten_handlers(kwargs.get("train_handlers"))
        super().__init__(*args, **kwargs)
        self.distiller = distiller

    def _synchronise_distiller(self) -> None:
        """Average the distiller's adapter gradients over processes (DDP only covers the student)."""
        if self.distiller is not None:
            average_gradients(p for p in self.distiller.parameters() if p.requires_grad)

    def compute_loss_terms(
        self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, images: torch.Tensor,
        sample_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms of one batch: ``hard``, then the distiller's (``soft``, ``feature/<layer>``).

        ``images`` are what the teacher sees (the batch's ``teacher_image`` when it has one).
        ``sample_index`` (positions in the training list) lets a distiller with a
        teacher-output cache look the teacher's outputs up. A loss that returns several
        hard-label terms names them ``hard/<name>``; the distiller's ``hard`` weight scales each.
        """
        result = self.loss_function(logits, labels, mask)
        terms = dict(result) if isinstance(result, dict) else {"hard": result}
        if self.distiller is not None:
            weight = self.distiller.weights["hard"]
            terms = {name: weight * term if name == "hard" or name.startswith("hard/") else term
                     for name, term in terms.items()}
            terms.update(self.distiller(images, logits, sample_index))
        return terms

    def _iteration(self, engine: CXRTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batchdata = drop_unreadable(batchdata, engine)
        if batchdata is None:  # every image of the batch was unreadable: nothing to learn from
            engine.state.output = {Keys.LOSS: torch.zeros((), device=engine.state.device), LOSS_TERMS: {}}
            return engine.state.output
        images, labels, mask = batch_to_device(batchdata, engine.state.device, engine.non_blocking)
        teacher_images = batchdata.get(TEACHER_IMAGE)
        teacher_images = images if teacher_images is None else teacher_images.to(engine.state.device,
                                                                                  non_blocking=engine.non_blocking)
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: labels, LABEL_MASK: mask}

        def forward_and_loss() -> None:
            logits = engine.inferer(images, engine.network)
            engine.state.output[Keys.PRED] = logits
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = engine.compute_loss_terms(logits, labels, mask, teacher_images, batchdata.get(SAMPLE_INDEX))
            engine.state.output[Keys.LOSS] = torch.stack([t.float() for t in terms.values()]).sum()
            engine.state.output[LOSS_TERMS] = {name: float(t.detach()) for name, t in terms.items()}
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        engine.network.train()
        if engine.distiller is not None:
            engine.distiller.train()  # adapters train; the teacher stays in eval mode
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                forward_and_loss()
            engine.scaler.scale(engine.state.output[Keys.LOSS]).backward()
            engine._synchronise_distiller()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            forward_and_loss()
            engine.state.output[Keys.LOSS].backward()
            engine._synchronise_distiller()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
