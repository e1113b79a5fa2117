"""Stop at the first non-finite loss, naming the iteration and the loss term.

Ignite's ``TerminateOnNan`` ends the run quietly; a user then finds a finished run
with a useless model. :class:`NonFiniteLossGuard` raises instead, with the epoch,
the iteration and every value of ``output_transform(engine.state.output)`` that is NaN or
infinite (default: the total loss and every named term, :func:`loss_and_terms_by_name`; as
Ignite's ``TerminateOnNan``, any transform returning a number, a tensor or a mapping of them
works). On MONAI trainers it runs at
``IterationEvents.LOSS_COMPLETED``, before the backward pass, so the bad step never
reaches the weights; checkpoints are written at epoch ends, so the last good one stays.

Config example (``train#handlers``)::

    {"_target_": "bundle.handlers.NonFiniteLossGuard"}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from ..keys import Keys

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard", "loss_and_terms_by_name"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


def loss_and_terms_by_name(output: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every named loss term of an iteration and the total as ``loss`` (the guard's default transform)."""
    output = output or {}
    values = dict(output.get(Keys.LOSS_TERMS) or {})
    if output.get(Keys.LOSS) is not None:
        values.setdefault("loss", output[Keys.LOSS])
    return values


def _named_values(value: Any, name: str = "loss") -> dict[str, float]:
    if isinstance(value, Mapping):
        return {key: v for k, item in value.items() for key, v in _named_values(item, str(k)).items()}
    if isinstance(value, torch.Tensor):
        value = value.detach().float()
        return {name: float(value)} if value.numel() == 1 else {f"{name}[{i}]": float(v) for i, v in
                                                                 enumerate(value.reshape(-1).tolist())}
    if isinstance(value, (list, tuple)):
        return {key: v for i, item in enumerate(value) for key, v in _named_values(item, f"{name}[{i}]").items()}
    return {name: float(value)}


class NonFiniteLossGuard:
    """Raise :class:`NonFiniteLossError` when the loss of an iteration is not finite.

    Args:
        output_transform: iteration output -> the values to check: a number, a tensor, or a mapping
            of names to them (default :func:`loss_and_terms_by_name`: the total and every term).
    """

    def __init__(self, output_transform: Callable[[Any], Any] = loss_and_terms_by_name) -> None:
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        event = IterationEvents.LOSS_COMPLETED
        engine.add_event_handler(event if engine.has_registered_events(event) else Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        values = _named_values(self.output_transform(engine.state.output))
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if bad:
            described = ", ".join(f"{name}={value}" for name, value in bad.items())
            raise NonFiniteLossError(
                f"non-finite loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {described}. "
                f"Training stopped; the checkpoints of the last finished epoch are kept. Lower the learning rate "
                f"or the loss weights, or check the data."
            )
