"""Checkpoints that survive crashes: atomic writes, a best model that only improves, and resume.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``, for file permissions),
so a crash while writing can leave a truncated ``model.pt``, and after a restart its
key-metric bookkeeping starts empty, so the first validation after a resume replaces
the best model whatever its score. These handlers close both gaps:

* :func:`save_atomic`: ``torch.save`` to a temporary file in the same folder, ``fsync``,
  then ``os.replace``; the file gets ordinary permissions (``0o666 & ~umask``).
* :class:`ModelSaver`: the network's weights, either when the validator's key
  metric improves (``model.pt``, a plain state dict as the Model Zoo expects) or at
  the end of training (``model_final.pt``). A NaN metric never replaces a saved model.
* :class:`ResumeCheckpoint`: at the end of every epoch, everything needed to go on
  (network, optimiser, scheduler, adapters, trainer epoch and iteration, the best
  metric so far) in ``checkpoints/last.pt``; at the start of a run, if that file
  exists, it is loaded and training continues after the last finished epoch. With
  :class:`~bundle.handlers.SeedEachEpoch` the resumed run then repeats exactly what
  the uninterrupted run would have done (on CPU, ``num_workers=0``).

Config example (``train#handlers``)::

    {"_target_": "bundle.handlers.ResumeCheckpoint",
     "path": "$os.path.join(@output_dir, 'checkpoints', 'last.pt')",
     "objects": {"network": "@network", "optimizer": "@train#optimizer",
                 "lr_scheduler": "@train#lr_scheduler"},
     "validator": "@validate#evaluator", "best_model": "@validate#best_model", "enabled": "@resume"}
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from ignite.engine import Engine, Events

from ..distributed import barrier, rank, unwrap

__all__ = ["write_atomic", "save_atomic", "ModelSaver", "ResumeCheckpoint"]

logger = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file in ``path``'s folder, fsync, then rename it to ``path``.

    A crash at any point leaves either the old file or the new one, never half a file.
    The file gets ordinary permissions (``0o666 & ~umask``; ``mkstemp`` makes it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through :func:`write_atomic`: never half a checkpoint."""
    return write_atomic(path, lambda stream: torch.save(obj, stream))


class ModelSaver:
    """Save a network's ``state_dict`` atomically: on a better key metric, or at the end.

    Args:
        network: the trained network.
        path: file to write (e.g. ``<output_dir>/model.pt``).
        key_metric: attach to an evaluator and save when ``state.metrics[key_metric]``
            improves on the best so far; None: attach to the trainer and save when it completes.
        mode: ``"max"`` or ``"min"`` (which direction is better).

    ``state_dict()`` / ``load_state_dict()`` carry the best score, so that a resumed run
    does not overwrite the best model with a worse one.
    """

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike, key_metric: str | None = None,
                 mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.network, self.path, self.key_metric, self.mode = network, Path(path), key_metric, mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        event = Events.EPOCH_COMPLETED if self.key_metric else Events.COMPLETED
        engine.add_event_handler(event, self)

    def is_better(self, score: float) -> bool:
        """Better than the best so far. An undefined score (NaN: e.g. AUC on a validation
        set with one class) counts only while nothing is saved, so a run always leaves a
        model; any finite score then replaces it."""
        if self.best_score is None:
            return True
        if math.isnan(score):
            return False
        if math.isnan(self.best_score):
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def __call__(self, engine: Engine) -> None:
        if self.key_metric is None:
            save_atomic(unwrap(self.network).state_dict(), self.path)
            return
        score = engine.state.metrics.get(self.key_metric)
        if score is None or not self.is_better(float(score)):
            return
        self.best_score, self.best_epoch = float(score), int(engine.state.epoch)
        save_atomic(unwrap(self.network).state_dict(), self.path)
        logger.info("saved %s (%s %.4f at epoch %d)", self.path, self.key_metric, self.best_score, self.best_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_score, self.best_epoch = state.get("best_score"), state.get("best_epoch")


def _not_ignite_resuming_from_zero(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Engine run resuming from iteration 0, epoch 0 ")


def _not_ignite_resuming(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Engine run resuming from iteration 0, epoch ")


class ResumeCheckpoint:
    """Save the training state after every epoch; load it (and go on) when a run starts.

    Args:
        path: the checkpoint file (e.g. ``<output_dir>/checkpoints/last.pt``).
        objects: ``{name: object with state_dict()/load_state_dict()}``: network,
            optimiser, scheduler, the distiller (its adapters train), a GradScaler.
            None values (e.g. no distiller) are skipped.
        validator: the evaluator whose ``best_metric`` / ``best_metric_epoch`` are kept.
        best_model: the :class:`ModelSaver` of the best model (its best score is kept).
        enabled: False: neither save nor load (e.g. ``--resume False`` for a fresh start
            in a used output folder; the old checkpoint is then overwritten).

    The trainer's own state (epoch, iteration) is always part of the checkpoint.
    Loading happens on ``Events.STARTED``, so Ignite goes on from the loaded epoch. One log line
    says what the run does: train from the start, or resume after epoch k (Ignite's own "resuming
    from iteration 0, epoch 0", which it prints for every MONAI run before anything is loaded, is
    left out).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        objects: Mapping[str, Any],
        validator: Engine | None = None,
        best_model: ModelSaver | None = None,
        enabled: bool = True,
    ) -> None:
        self.path = Path(path)
        # plain modules: a checkpoint of a multi-GPU run resumes a single-GPU one and back
        self.objects = {name: unwrap(obj) if isinstance(obj, torch.nn.Module) else obj
                        for name, obj in objects.items() if obj is not None}
        self.validator, self.best_model, self.enabled = validator, best_model, bool(enabled)
        self.resumed_from: int | None = None

    def attach(self, engine: Engine) -> None:
        # MONAI creates the engine state before the run, so Ignite announces every run, a fresh one
        # included, as "resuming from iteration 0, epoch 0", before anything is loaded (and every
        # validation as "resuming from iteration 0, epoch <k - 1>"); the line this handler logs at
        # STARTED says what really happens instead
        engine.logger.addFilter(_not_ignite_resuming_from_zero)
        if self.validator is not None:
            self.validator.logger.addFilter(_not_ignite_resuming)
        if not self.enabled:
            engine.add_event_handler(Events.STARTED, self._announce_fresh_start)
            return
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _announce_fresh_start(self, engine: Engine) -> None:
        logger.info("training epochs 1-%d from the start (--resume False: %s is neither read nor kept)",
                    engine.state.max_epochs, self.path)

    def _state(self, engine: Engine) -> dict[str, Any]:
        state = {name: obj.state_dict() for name, obj in self.objects.items()}
        state["trainer"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration,
                            "max_epochs": engine.state.max_epochs}
        if self.validator is not None:
            state["validator"] = {"best_metric": getattr(self.validator.state, "best_metric", -1),
                                  "best_metric_epoch": getattr(self.validator.state, "best_metric_epoch", -1)}
        if self.best_model is not None:
            state["best_model"] = self.best_model.state_dict()
        return state

    def save(self, engine: Engine) -> None:
        """Every process reaches here with the same state (DDP); the first one writes it."""
        if rank() == 0:
            save_atomic(self._state(engine), self.path)
        barrier()  # no process runs ahead into an epoch whose predecessor is not on disk yet

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            logger.info("training epochs 1-%d from the start (no resume checkpoint at %s yet)",
                        engine.state.max_epochs, self.path)
            return
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # never silently start over: the user decides
            raise RuntimeError(f"{self.path}: cannot read the resume checkpoint ({error}); "
                               f"delete it to start again, or pass --resume False") from error
        # an object with nothing to keep (the distiller of a stage without a teacher) is not required, so that
        # checkpoints written before every stage had a distiller resume too
        missing = sorted(name for name in set(self.objects) - set(state) if self.objects[name].state_dict())
        if missing:
            raise RuntimeError(f"{self.path}: the resume checkpoint has no {missing}; it is from another "
                               f"configuration (delete it, or pass --resume False)")
        for name, obj in self.objects.items():
            if name not in state:
                continue
            try:
                obj.load_state_dict(state[name])
            except (RuntimeError, ValueError, KeyError) as error:
                raise RuntimeError(f"{self.path}: the resume checkpoint's {name!r} does not fit this run: "
                                   f"{error}") from error
        epoch, iteration = int(state["trainer"]["epoch"]), int(state["trainer"]["iteration"])
        if epoch > engine.state.max_epochs:
            raise RuntimeError(f"{self.path}: the checkpoint is at epoch {epoch}, past max_epochs "
                               f"{engine.state.max_epochs}")
        engine.state.epoch, engine.state.iteration = epoch, iteration
        if self.validator is not None and "validator" in state:
            self.validator.state.best_metric = state["validator"]["best_metric"]
            self.validator.state.best_metric_epoch = state["validator"]["best_metric_epoch"]
        if self.best_model is not None and "best_model" in state:
            self.best_model.load_state_dict(state["best_model"])
        self.resumed_from = epoch
        if epoch < engine.state.max_epochs:
            logger.info("resumed from %s: epoch %d, iteration %d done; training epochs %d-%d", self.path, epoch,
                        iteration, epoch + 1, engine.state.max_epochs)
        else:
            logger.warning("resumed from %s: this run already finished all %d epochs; nothing to train (raise "
                           "--max_epochs to go on, or pass --resume False to start again)", self.path, epoch)
