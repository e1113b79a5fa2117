"""Stop at the first non-finite loss, naming the iteration and the loss term.

Ignite's ``TerminateOnNan`` ends the run quietly; a user then finds a finished run
with a useless model. :class:`NonFiniteLossGuard` raises instead, with the epoch,
the iteration and every term that is NaN or infinite (from
``engine.state.output["loss_terms"]``). On MONAI trainers it runs at
``IterationEvents.LOSS_COMPLETED``, before the backward pass, so the bad step never
reaches the weights; checkpoints are written at epoch ends, so the last good one stays.

Config example (``train#handlers``)::

    {"_target_": "bundle.handlers.NonFiniteLossGuard"}
"""

from __future__ import annotations

import math

from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from ..keys import Keys

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class NonFiniteLossGuard:
    """Raise :class:`NonFiniteLossError` when the loss of an iteration is not finite."""

    def attach(self, engine: Engine) -> None:
        event = IterationEvents.LOSS_COMPLETED
        engine.add_event_handler(event if engine.has_registered_events(event) else Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output or {}
        terms = dict(output.get(Keys.LOSS_TERMS) or {})
        loss = output.get(Keys.LOSS)
        if loss is not None:
            terms.setdefault("loss", float(loss.detach()) if hasattr(loss, "detach") else float(loss))
        bad = {name: value for name, value in terms.items() if not math.isfinite(float(value))}
        if bad:
            described = ", ".join(f"{name}={value}" for name, value in bad.items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {described}. "
                f"Training stopped; the checkpoints of the last finished epoch are kept. Lower the learning rate "
                f"or the loss weights, or check the data."
            )
