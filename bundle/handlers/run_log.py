"""Copies everything logged during a run (trainer, validator, handlers) into ``<output_dir>/log.txt``."""

from __future__ import annotations

import logging
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["RunLogFile", "open_run_log"]

DEFAULT_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def _root_file_handler(path: Path) -> logging.FileHandler | None:
    """The root logger's file handler writing to ``path``, if one is open."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.resolve():
            return handler
    return None


def open_run_log(output_dir: str, filename: str = "log.txt", level: int = logging.INFO,
                 formatter: str = DEFAULT_FORMAT) -> Path:
    """Start ``<output_dir>/log.txt`` now, before the trainer starts (configs' ``initialize``).

    What happens before the first epoch at scale (reading the label file, the data check, the
    teacher join, building the caches) can take minutes, and its progress lines belong in the run's
    log file too. :class:`RunLogFile` adopts the handler opened here and closes it when training
    ends. Opening twice is a no-op.
    """
    path = Path(output_dir) / filename
    if _root_file_handler(path) is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(formatter))
        logging.getLogger().addHandler(handler)
    return path


class RunLogFile:
    """A file handler on the root logger for the length of an engine run.

    MONAI's ``LogfileHandler`` adds its file to the engine's own logger only, so the
    validator's metrics (logged by its StatsHandler) never reach the file; this
    handler listens at the root, where every logger of the run propagates. A file opened earlier by
    :func:`open_run_log` (the phases before training) is adopted, not opened twice.
    """

    def __init__(self, output_dir: str, filename: str = "log.txt", level: int = logging.INFO,
                 formatter: str = DEFAULT_FORMAT) -> None:
        self.path = Path(output_dir) / filename
        self.level, self.formatter = level, formatter
        self._handler: logging.Handler | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_on_error)

    def _open(self, engine: Engine) -> None:
        if self._handler is None:
            open_run_log(str(self.path.parent), self.path.name, self.level, self.formatter)
            self._handler = _root_file_handler(self.path)

    def _close(self, engine: Engine) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def _close_on_error(self, engine: Engine, error: BaseException) -> None:
        logging.getLogger().exception("run stopped by %s: %s", type(error).__name__, error)
        self._close(engine)
        raise error
