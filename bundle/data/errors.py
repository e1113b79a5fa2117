"""Errors raised by the data layer.

Every error names the offending file (or data set) and the problem, so that a
user reading a log of 10,000 images knows which one to fix. Uncaught, it is the last
thing a command prints (see :mod:`bundle.error_report`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CXRDataError", "DataProblem"]


class CXRDataError(ValueError):
    """An input file or label table that cannot be used, with the path and the reason.

    Subclasses ``ValueError`` so callers that already catch bad values keep working.
    ``CXRDataError(message)`` (one argument) is a problem without a path: PyTorch rebuilds a
    DataLoader worker's error that way. ``advice`` says what to do, where the problem does not.
    """

    def __init__(self, path: str | Path | None, problem: str | None = None, *, advice: str | None = None):
        if problem is None:  # CXRDataError("message")
            path, problem = None, "" if path is None else str(path)
        self.path = None if path is None else str(path)
        self.problem = problem
        self.advice = advice
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # pickles with path, problem and advice (DataLoader workers, multiprocessing)
        return _rebuild, (type(self), self.path, self.problem, self.advice)


def _rebuild(cls: type, path: str | None, problem: str, advice: str | None) -> CXRDataError:
    return cls(path, problem, advice=advice)


class DataProblem(CXRDataError):
    """One problem found by a data-set check; collected, not raised one by one."""
