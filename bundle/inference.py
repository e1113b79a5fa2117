"""Inference inputs and outcome: which files to read, and what the run's exit status says.

``configs/inference.json`` reads a folder (searched recursively), one file, or a list
of files. Every file of a folder is an input, whatever its name: PNG, JPEG, BMP, TIFF,
DICOM (recognised by content, with or without preamble or extension), NIfTI, MHA/NRRD
are predicted; anything else (a format the loader does not read, a text file, a named
pipe, a socket, a device, a dangling symbolic link ...) is listed in ``predictions.csv`` /
``predictions.json`` with its problem. Nothing is opened before the loader has checked
what it is (a named pipe is never opened: that would block). Files that cannot be read do
not stop the run: the loader records the problem (``LoadCXRd(on_error="record")``), the
other images are predicted, and :func:`raise_if_bad_inputs` ends the run with exit status 3,
so a pipeline knows.

Hidden entries (names starting with ``.``, such as ``.DS_Store`` or ``.git/``) are not
inputs; they are named in one log line. Symbolic links to folders are followed, each folder
once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundle.data.errors import CXRDataError
from bundle.data.io import list_folder
from bundle.keys import Keys

__all__ = ["find_images", "raise_if_bad_inputs", "BAD_INPUTS_EXIT_STATUS"]

BAD_INPUTS_EXIT_STATUS = 3
logger = logging.getLogger(__name__)


def find_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Records ``{"image": path, "filename": path}`` for a folder (recursive), a file, or a list of files.

    A folder contributes every entry below it that is not a folder or hidden (see
    :func:`bundle.data.io.list_folder`): the loader then predicts or describes each. Files named in a list are
    kept as they are. Raises :class:`CXRDataError` when the source does not exist or a folder
    holds no file.
    """
    if source is None:
        raise CXRDataError(None, "no input given: set --dataset_dir to a folder, a file, or a list of files")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists() and not path.is_symlink():
            raise CXRDataError(path, "input folder or file does not exist")
        if path.is_dir():
            paths, hidden = list_folder(path)
            if hidden:
                names = ", ".join(p.name for p in hidden[:5]) + (", ..." if len(hidden) > 5 else "")
                logger.info("%s: %d hidden entr%s not read (%s)", path, len(hidden), "y" if len(hidden) == 1 else "ies",
                            names)
            if not paths:
                raise CXRDataError(path, "no files found in the folder" + (" (only hidden ones)" if hidden else ""))
        else:
            paths = [path]
    else:
        paths = [Path(p).expanduser() for p in source]
        if not paths:
            raise CXRDataError(None, "the list of input files is empty")
    return [{Keys.IMAGE: str(p), Keys.FILENAME: str(p)} for p in paths]


def raise_if_bad_inputs(writer: Any, exit_on_bad: bool = True) -> None:
    """End the run with exit status 3 if any input could not be read (after everything was written).

    ``writer`` is the :class:`~bundle.handlers.PredictionWriter` of the run.
    """
    bad = writer.bad_inputs
    if not bad:
        return
    listing = "\n".join(f"  {row['image']}: {row['error']}" for row in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    message = (f"{len(bad)} of {writer.count} input(s) could not be read and have no prediction "
               f"(all listed in {writer.csv_path}):\n{listing}{more}")
    print(message, file=sys.stderr)
    if exit_on_bad:
        raise SystemExit(BAD_INPUTS_EXIT_STATUS)
