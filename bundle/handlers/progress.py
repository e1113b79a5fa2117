"""Ignite's progress bar with the running loss, declared in a MONAI handler list, drawn on terminals only."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar
from monai.handlers import from_engine

__all__ = ["LossProgressBar"]


class LossProgressBar:
    """Ignite's ``ProgressBar`` (tqdm), showing the running loss.

    What it adds to Ignite's: the loss in the bar (from decollated or batch outputs), its options
    given at construction (MONAI attaches handlers with ``handler.attach(engine)``, while Ignite's
    bar takes them at ``attach``), and no bar off a terminal: redirected to a file or a pipe (a log
    file, CI, ``nohup``), tqdm's carriage-return updates would make one line thousands of characters
    long, so there only the trainer's own per-epoch log lines are written (tqdm's ``disable=None``).

    Args:
        persist: keep the finished bar of each epoch.
        show_loss: show the running loss.
        tqdm_kwargs: passed to tqdm (``disable=False`` draws it off a terminal too).
    """

    def __init__(self, persist: bool = False, show_loss: bool = True, **tqdm_kwargs: Any) -> None:
        tqdm_kwargs.setdefault("disable", None)
        self.bar = ProgressBar(persist=persist, **tqdm_kwargs)
        self.show_loss = show_loss

    def attach(self, engine: Engine) -> None:
        loss = from_engine(["loss"], first=True)  # works on decollated (list) and batch (dict) outputs
        transform = (lambda output: {"loss": float(loss(output)[0].detach())}) if self.show_loss else None
        self.bar.attach(engine, output_transform=transform)
