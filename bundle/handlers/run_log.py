"""Copies everything logged during a run (trainer, validator, handlers) into ``<output_dir>/log.txt``."""

from __future__ import annotations

import logging
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["RunLogFile"]


class RunLogFile:
    """A file handler on the root logger for the length of an engine run.

    MONAI's ``LogfileHandler`` adds its file to the engine's own logger only, so the
    validator's metrics (logged by its StatsHandler) never reach the file; this
    handler listens at the root, where every logger of the run propagates.
    """

    def __init__(self, output_dir: str, filename: str = "log.txt", level: int = logging.INFO,
                 formatter: str = "%(asctime)s %(name)s %(levelname)s: %(message)s") -> None:
        self.path = Path(output_dir) / filename
        self.level, self.formatter = level, formatter
        self._handler: logging.Handler | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_on_error)

    def _open(self, engine: Engine) -> None:
        if self._handler is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(self.path)
            self._handler.setLevel(self.level)
            self._handler.setFormatter(logging.Formatter(self.formatter))
            logging.getLogger().addHandler(self._handler)

    def _close(self, engine: Engine) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def _close_on_error(self, engine: Engine, error: BaseException) -> None:
        logging.getLogger().exception("run stopped by %s: %s", type(error).__name__, error)
        self._close(engine)
        raise error
