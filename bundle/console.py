"""What long work shows on the console: progress bars on terminals only, and one process's log lines.

* :func:`progress`: a tqdm bar for work that takes a while outside an engine (generating the
  phantoms, the bootstrap of an evaluation). Drawn only on a terminal (tqdm's ``disable=None``:
  redirected to a file, a pipe or CI, its carriage-return updates would make one line thousands of
  characters long) and only by the first process of a multi-process run.
* :func:`log_on_first_process_only`: under ``torchrun`` every process runs the same engines and
  would print the same Ignite and MONAI log lines; the other processes keep their warnings and errors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

from .distributed import rank

__all__ = ["FirstProcessOnly", "log_on_first_process_only", "process_rank", "progress"]

T = TypeVar("T")


def process_rank() -> int:
    """This process's rank: the process group's, else ``torchrun``'s ``RANK`` (set before the group starts), else 0."""
    return rank() if rank() > 0 else int(os.environ.get("RANK", "0") or 0)


def progress(iterable: Iterable[T], description: str, total: int | None = None, enabled: bool | None = None,
             **tqdm_kwargs: Any) -> Iterable[T]:
    """``iterable`` with a progress bar: on a terminal of the first process (``enabled=None``), always
    (``True``) or never (``False``). The bar disappears when done (``leave=False``)."""
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
