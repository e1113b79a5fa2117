"""Inference inputs and outcome: which files to read, and what the run's exit status says.

``configs/inference.json`` reads a folder (searched recursively), one file, or a list
of files: PNG, JPEG, BMP, TIFF, DICOM (any name: DICOM is recognised by content),
NIfTI, MHA/NRRD. Files that cannot be read do not stop the run: the loader records
the problem (``LoadCXRd(on_error="record")``), the other images are predicted, the
bad ones are listed in ``predictions.csv`` / ``predictions.json`` with their problem,
and :func:`raise_if_bad_inputs` ends the run with exit status 3, so a pipeline knows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundle.data.errors import CXRDataError
from bundle.data.io import IMAGE_EXTENSIONS

__all__ = ["find_images", "raise_if_bad_inputs", "BAD_INPUTS_EXIT_STATUS"]

BAD_INPUTS_EXIT_STATUS = 3


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _candidates(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith("."):
                continue
            # images by name; anything else only if it is a DICOM (files like IM0001 or 1.2.840...)
            if name.lower().endswith(IMAGE_EXTENSIONS) or _is_dicom(path):
                found.append(path)
    return found


def find_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Records ``{"image": path, "filename": path}`` for a folder (recursive), a file, or a list of files.

    Files named in a list are kept even if they look wrong (the loader then reports
    them); a folder contributes its image files. Raises :class:`CXRDataError` when the
    source does not exist or holds no image.
    """
    if source is None:
        raise CXRDataError(None, "no input given: set --dataset_dir to a folder, a file, or a list of files")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise CXRDataError(path, "input folder or file does not exist")
        paths = _candidates(path) if path.is_dir() else [path]
        if not paths:
            raise CXRDataError(path, f"no image files found (looked for {', '.join(IMAGE_EXTENSIONS)} and DICOM)")
    else:
        paths = [Path(p).expanduser() for p in source]
        if not paths:
            raise CXRDataError(None, "the list of input files is empty")
    return [{"image": str(p), "filename": str(p)} for p in paths]


def raise_if_bad_inputs(writer: Any, exit_on_bad: bool = True) -> None:
    """End the run with exit status 3 if any input could not be read (after everything was written).

    ``writer`` is the :class:`~bundle.handlers.PredictionWriter` of the run.
    """
    bad = writer.bad_inputs
    if not bad:
        return
    listing = "\n".join(f"  {row['image']}: {row['error']}" for row in bad[:20])
    message = (f"{len(bad)} of {writer.count} input(s) could not be read and have no prediction "
               f"(all listed in {writer.csv_path}):\n{listing}")
    print(message, file=sys.stderr)
    if exit_on_bad:
        raise SystemExit(BAD_INPUTS_EXIT_STATUS)
