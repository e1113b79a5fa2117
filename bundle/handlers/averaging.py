"""An exponential moving average of the trained weights: the model that is validated and saved.

With a small validation split the best-validation epoch is mostly noise (on NIH's 48 validation
images it picked epoch-2 models: docs/results.md), and the last epoch's weights carry the last
few batches' noise. Averaging the weights along the end of training (Polyak averaging; the "EMA"
of timm and of Ignite) gives one smoother model whichever epoch is chosen:

.. math:: \\theta_{\\mathrm{EMA}} \\leftarrow (1 - m)\\,\\theta_{\\mathrm{EMA}} + m\\,\\theta
   \\quad\\text{after every iteration}

so an iteration's weights count for half after :math:`\\ln 0.5 / \\ln(1 - m)` further iterations
(m = 0.02: 34 iterations).

Batch-norm statistics do not average like weights: statistics gathered under many different weights
do not describe the activations of their average. With a deep network and a short run this is not a
detail: a MobileNetV3 averaged over the last epochs of 300 iterations tested 0.511 macro AUC with
averaged statistics and 0.571 with statistics re-estimated for the averaged weights (NIH, issue 14).
So, as in stochastic weight averaging (Izmailov et al. 2018), the averaged network's batch-norm
statistics are re-estimated by one pass over the training data (``batch_norm_loader``; torch's
``update_bn``, no gradients) at the end of every epoch, before it is validated and saved. A network
without batch norm (the ViTs) skips that pass.

This is Ignite's :class:`~ignite.handlers.EMAHandler` with that re-estimation added, and its
averaged copy made without the trained network's forward hooks. The distiller captures student features by hooks on
named modules; a plain ``deepcopy`` would copy those hooks, and with them (through their bound
objects) the distiller and its feature store, into the averaged model.

Config (``configs/student.json``): set ``ema_momentum`` (e.g. ``--ema_momentum 0.02``); then
``validated_network`` is the averaged copy, which the validator scores, ``model.pt`` and
``model_final.pt`` hold, and ``checkpoints/last.pt`` keeps for resuming::

    "weight_averaging": {"_target_": "bundle.handlers.WeightAveraging", "_disabled_": "$not @ema_momentum",
                         "model": "@network", "momentum": "@ema_momentum",
                         "batch_norm_loader": "@train#dataloader"},
    "validated_network": "$@weight_averaging.ema_model if @ema_momentum else @network"

It is listed in ``train#handlers`` before ``ValidationHandler`` and the final ``ModelSaver``: handlers of
one event run in the order they were attached, so the statistics are re-estimated before either uses them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn

from ..distributed import unwrap
from ..keys import Keys
from ..networks.hooks import without_forward_hooks

__all__ = ["WeightAveraging"]

logger = logging.getLogger(__name__)


class WeightAveraging(EMAHandler):
    """Ignite's ``EMAHandler`` over the trained network, its batch-norm statistics re-estimated each epoch.

    Args:
        model: the trained network (a DDP wrapper is looked through).
        momentum: weight of the newest weights at each update, in (0, 1).
        batch_norm_loader: the training data (batches of dicts with ``image``): after every epoch the
            averaged network's batch-norm statistics are re-estimated on it. None: they are averaged
            like the weights (Ignite's ``handle_buffers="update"``), which suits long runs only.
        momentum_warmup, warmup_iters: Ignite's linear warm-up of the momentum (optional).
        every: update the average after every ``every`` iterations.

    The averaged copy is made without the trained network's forward hooks.
    """

    def __init__(self, model: torch.nn.Module, momentum: float, batch_norm_loader: Iterable[Any] | None = None,
                 momentum_warmup: float | None = None, warmup_iters: int | None = None, every: int = 1) -> None:
        # "update" keeps the average's buffers its own ("copy" would share the trained network's tensors)
        with without_forward_hooks(unwrap(model)):
            super().__init__(model, momentum=momentum, momentum_warmup=momentum_warmup, warmup_iters=warmup_iters,
                             handle_buffers="update")
        for parameter in self.ema_model.parameters():
            parameter.requires_grad_(False)
        self.batch_norm_loader, self.every = batch_norm_loader, int(every)
        self.has_batch_norm = any(isinstance(m, _BatchNorm) for m in self.ema_model.modules())
        self._stale = False  # the weights changed since the statistics were last estimated

    @property
    def half_life(self) -> float:
        """Iterations after which an iteration's weights count for half in the average."""
        return math.log(0.5) / math.log(1.0 - self.momentum) * self.every

    def attach(self, engine: Engine, name: str = "ema_momentum", warn_if_exists: bool = False,  # type: ignore[override]
               event: Any = None) -> None:
        super().attach(engine, name=name, warn_if_exists=warn_if_exists,
                       event=event if event is not None else Events.ITERATION_COMPLETED(every=self.every))
        engine.add_event_handler(Events.STARTED, self._announce)
        if self.batch_norm_loader is not None and self.has_batch_norm:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._mark_stale)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.estimate_batch_norm)
            engine.add_event_handler(Events.COMPLETED, self.estimate_batch_norm)

    def _mark_stale(self, engine: Engine) -> None:
        self._stale = True

    def estimate_batch_norm(self, engine: Engine) -> None:
        """Re-estimate the averaged network's batch-norm statistics on the training data, if its weights changed
        since the last time (a resumed run with nothing left to train keeps the saved statistics)."""
        if not self._stale:
            return
        device = next(self.ema_model.parameters()).device
        update_bn((batch[Keys.IMAGE] for batch in self.batch_norm_loader), self.ema_model, device=device)
        self._stale = False

    def _announce(self, engine: Engine) -> None:
        statistics = ("batch-norm statistics re-estimated on the training data each epoch"
                      if self.batch_norm_loader is not None and self.has_batch_norm else
                      "buffers averaged too" if self.has_batch_norm else "no batch norm")
        logger.info("validating and saving the moving average of the weights (momentum %g: an iteration's weights "
                    "count for half after %.1f more iterations; %s)", self.momentum, self.half_life, statistics)
