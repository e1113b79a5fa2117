"""Errors raised by the data layer.

Every error names the offending file (or data set) and the problem, so that a
user reading a log of 10,000 images knows which one to fix.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CXRDataError", "DataProblem"]


class CXRDataError(ValueError):
    """An input file or label table that cannot be used, with the path and the reason.

    Subclasses ``ValueError`` so callers that already catch bad values keep working.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class DataProblem(CXRDataError):
    """One problem found by a data-set check; collected, not raised one by one."""
