"""Progress of an engine: Ignite's bar with the running loss on terminals, progress lines in logs elsewhere."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import from_engine

from ..console import ProgressLog, on_terminal

__all__ = ["LossProgressBar", "ProgressLines"]


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


class ProgressLines:
    """Off a terminal, a progress line every 30 s or so of each epoch (or validation pass) of an engine.

    Where :class:`LossProgressBar` draws no bar (output redirected to a file, a pipe, CI, ``nohup``),
    a long epoch would otherwise print nothing until it ends: at NIH's size an epoch of a 2-core
    machine is many minutes, and a user cannot tell it from a hang. This handler logs
    ``"training epoch 1/14: 640/2,452 batches (26%), 3.1 batches/s, about 9 min 44 s left"``
    (:class:`bundle.console.ProgressLog`, to the console and ``log.txt``) at most once per
    ``interval`` seconds (default ``$CXR_PROGRESS_INTERVAL`` or 30), and nothing on a terminal
    (where the bar shows the same) or on processes other than the first.

    Args:
        name: what an epoch of this engine is called: ``"training epoch"`` (numbered ``e/max``) or
            ``"validation"`` (an evaluator's one pass).
        interval: seconds between lines (None: :func:`bundle.console.progress_interval`).
        always: log the lines on a terminal too.

    Config example (``train#handlers``; ``validate#handlers`` with ``"name": "validation"``)::

        {"_target_": "bundle.handlers.ProgressLines", "name": "training epoch"}
    """

    def __init__(self, name: str = "training epoch", interval: float | None = None, always: bool = False) -> None:
        self.name, self.interval, self.always = name, interval, always
        self.log: ProgressLog | None = None

    def attach(self, engine: Engine) -> None:
        if not (self.always or not on_terminal()):
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end)

    def _description(self, engine: Engine) -> str:
        if engine.state.max_epochs and engine.state.max_epochs > 1:
            return f"{self.name} {engine.state.epoch}/{engine.state.max_epochs}"
        return self.name

    def _start(self, engine: Engine) -> None:
        self.log = ProgressLog(self._description(engine), engine.state.epoch_length, unit="batches",
                               interval=self.interval)

    def _step(self, engine: Engine) -> None:
        if self.log is not None:
            self.log.update()

    def _end(self, engine: Engine) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None
