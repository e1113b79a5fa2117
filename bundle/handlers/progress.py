"""A progress bar that can be declared in a MONAI config's handler list."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar as IgniteProgressBar
from monai.handlers import from_engine

__all__ = ["ProgressBar"]


class ProgressBar:
    """Ignite's tqdm progress bar, showing the running loss.

    MONAI attaches handlers with ``handler.attach(engine)``, while Ignite's bar takes
    its options at ``attach``; this wrapper takes them at construction.
    """

    def __init__(self, persist: bool = False, show_loss: bool = True, **tqdm_kwargs: Any) -> None:
        self.bar = IgniteProgressBar(persist=persist, **tqdm_kwargs)
        self.show_loss = show_loss

    def attach(self, engine: Engine) -> None:
        loss = from_engine(["loss"], first=True)  # works on decollated (list) and batch (dict) outputs
        transform = (lambda output: {"loss": float(loss(output)[0].detach())}) if self.show_loss else None
        self.bar.attach(engine, output_transform=transform)
