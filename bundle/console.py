"""What long work shows on the console: progress bars on terminals, progress lines elsewhere, one process's log lines.

* :func:`progress`: a tqdm bar for work that takes a while outside an engine (generating the
  phantoms, building an image cache, the teacher join, the bootstrap of an evaluation). Drawn only
  on a terminal (tqdm's ``disable=None``: redirected to a file, a pipe or CI, its carriage-return
  updates would make one line thousands of characters long) and only by the first process of a
  multi-process run. Off a terminal the same call logs a :class:`ProgressLog` line instead, every
  :func:`progress_interval` seconds (30 by default; ``CXR_PROGRESS_INTERVAL``): done / total, rate,
  time left. Logged lines reach the console (``configs/logging.conf``) and the run's ``log.txt``
  (:func:`bundle.handlers.open_run_log`), so a server log shows caching apart from a hang.
* :class:`ProgressLog`: those lines for work counted by hand (``update(n)``), e.g. engine epochs
  (:class:`bundle.handlers.ProgressLines`).
* :func:`log_on_first_process_only`: under ``torchrun`` every process runs the same engines and
  would print the same Ignite and MONAI log lines; the other processes keep their warnings and errors.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

from .distributed import rank

__all__ = ["FirstProcessOnly", "ProgressLog", "format_duration", "log_on_first_process_only", "on_terminal",
           "process_rank", "progress", "progress_interval"]

T = TypeVar("T")
PROGRESS_INTERVAL_ENV = "CXR_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 30.0
progress_logger = logging.getLogger("cxr-distill.progress")


def process_rank() -> int:
    """This process's rank: the process group's, else ``torchrun``'s ``RANK`` (set before the group starts), else 0."""
    return rank() if rank() > 0 else int(os.environ.get("RANK", "0") or 0)


def progress_interval() -> float:
    """Seconds between two progress lines off a terminal: ``$CXR_PROGRESS_INTERVAL``, else 30."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_PROGRESS_INTERVAL)))
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL


def on_terminal() -> bool:
    """Whether progress bars are drawn here: stderr (tqdm's stream) is a terminal."""
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; ``4000`` -> ``"1 h 07 min"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressLog:
    """Progress lines of one long piece of work, at most one every ``interval`` seconds.

    ``update(n)`` after each step; a line ``"<description>: 3,200/78,468 images (4%), 106 images/s,
    about 12 min 10 s left"`` is logged (``cxr-distill.progress``, INFO) when ``interval`` seconds have
    passed since the last one, and a closing ``"<description>: done, 78,468 images in 12 min 21 s"``
    by :meth:`close` when at least one line was written. Nothing is logged on processes other than
    the first.

    Args:
        description: what is being done ("building the image cache", "epoch 1/14").
        total: how many steps in all (None: unknown; no percentage or time left).
        unit: what a step is, for the line.
        interval: seconds between lines (default :func:`progress_interval`).
        logger: where the lines go.
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "it", interval: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.interval = progress_interval() if interval is None else float(interval)
        self.logger = logger or progress_logger
        self.enabled = process_rank() == 0
        self.done = 0
        self.lines = 0
        self.start = self.last = time.monotonic()

    def reset(self, description: str | None = None, total: int | None = None) -> None:
        """Start counting again (a new epoch) under a new description and total."""
        self.description = self.description if description is None else description
        self.total = total
        self.done = self.lines = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self.lines += 1
            self.logger.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.description}: {self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"
        if self.total:
            text += f" ({100.0 * self.done / self.total:.0f}%)"
        text += f", {rate:,.1f} {self.unit}/s" if rate < 100 else f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0:
            text += f", about {format_duration((self.total - self.done) / rate)} left"
        return text

    def close(self) -> None:
        if self.enabled and self.lines:
            self.lines = 0
            self.logger.info(f"{self.description}: done, {self.done:,} {self.unit} in "
                             f"{format_duration(time.monotonic() - self.start)}")


def _logged(iterable: Iterable[T], log: ProgressLog) -> Iterator[T]:
    try:
        for item in iterable:
            yield item
            log.update()
    finally:
        log.close()


def progress(iterable: Iterable[T], description: str, total: int | None = None, enabled: bool | None = None,
             **tqdm_kwargs: Any) -> Iterable[T]:
    """``iterable`` with a progress bar: on a terminal of the first process (``enabled=None``), always
    (``True``) or never (``False``). The bar disappears when done (``leave=False``). Where no bar is
    drawn because the output is not a terminal (``enabled=None``, first process), progress lines are
    logged instead (:class:`ProgressLog`: every :func:`progress_interval` seconds)."""
    if enabled is None and process_rank() == 0 and not on_terminal():
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        return _logged(iterable, ProgressLog(description, total, unit=tqdm_kwargs.get("unit", "it")))
    disable = (not enabled) if enabled is not None else (True if process_rank() > 0 else None)
    tqdm_kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=description, total=total, disable=disable, **tqdm_kwargs)


class FirstProcessOnly(logging.Filter):
    """Passes every record on the first process; on the others, warnings and errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or process_rank() == 0


def log_on_first_process_only() -> None:
    """On processes other than the first, drop log records below WARNING from every handler configured now.

    Called by ``configs/multi_gpu_train.json`` once the process group has started; a no-op on the
    first process. MONAI's own input summary, printed before the config runs, still comes from
    every process.
    """
    if process_rank() == 0:
        return
    loggers = [logging.getLogger()] + [item for item in logging.root.manager.loggerDict.values()
                                        if isinstance(item, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, FirstProcessOnly) for f in handler.filters):
                handler.addFilter(FirstProcessOnly())
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
