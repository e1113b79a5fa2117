"""The error every step of an export raises."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(RuntimeError):
    """A problem that stops an export, said in terms of what the user gave (checkpoint, name, config)."""
