"""Finding the one DICOM image a run classifies, and reading it as a chest radiograph.

Pixels are read by the bundle's :func:`bundle.data.io.load_cxr` (modality LUT, VOI LUT or
window, MONOCHROME1 inversion, chest / radiograph check), which is what the bundle's
``LoadCXRd`` does for a path, so a file gives the same image here as in ``configs/inference.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundle.data.errors import CXRDataError
from bundle.data.io import image_format, list_folder, load_cxr, path_problem, read_dicom_header

__all__ = ["ChestRadiograph", "InputScan", "find_input_dicom", "read_chest_radiograph", "scan_input"]

_IMAGE_STORAGE_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class InputScan:
    """The DICOM image a run classifies, and every other file of the input folder with why it was not used."""

    image: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def scan_input(source: str | os.PathLike) -> InputScan:
    """The one DICOM image file to classify: ``source`` itself, or the only DICOM image under the folder.

    A folder is searched recursively (:func:`bundle.data.io.list_folder`; DICOM recognised by
    content, with or without preamble, any file name). Every other file is returned in
    ``skipped`` with its reason: not DICOM, a DICOM without pixel data (a DICOMDIR, a Structured
    Report such as this app's own output), unreadable, a named pipe, socket or device (never
    opened), a dangling link. The app classifies one radiograph per run, so a folder holding
    several DICOM images is refused (naming them) rather than guessed at.

    Raises:
        CXRDataError: naming the file or folder: missing, not DICOM, no pixel data, or a
            folder with no / several DICOM images (the first skipped files with their reasons).
    """
    path = Path(source).expanduser()
    if not path.exists() and not path.is_symlink():
        raise CXRDataError(path, "input file or folder does not exist")
    if not path.is_dir():
        problem = path_problem(path)
        if problem is not None:
            raise CXRDataError(path, problem)
        if image_format(path) != "dicom":
            raise CXRDataError(path, "not a DICOM file")
        header = read_dicom_header(path)
        if "SOPClassUID" not in header:
            raise CXRDataError(path, "not a DICOM file")
        _require_pixel_data(path)
        return InputScan(path)
    entries, hidden = list_folder(path)
    images, skipped = [], []
    for entry in entries:
        reason = _why_not_a_dicom_image(entry)
        if reason is None:
            images.append(entry)
        else:
            skipped.append((entry, reason))
    if not images:
        listing = "; ".join(f"{p}: {why}" for p, why in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        what = f" ({len(skipped)} other file(s): {listing})" if skipped else " (the folder holds no files)"
        if hidden and not skipped:
            what = f" (only {len(hidden)} hidden entr{'y' if len(hidden) == 1 else 'ies'})"
        raise CXRDataError(path, f"no DICOM image found in the folder{what}")
    if len(images) > 1:
        listing = ", ".join(str(p) for p in images[:10])
        raise CXRDataError(path, f"{len(images)} DICOM images in the folder; this app classifies one radiograph "
                                 f"per run: pass one file ({listing})")
    return InputScan(images[0], skipped)


def find_input_dicom(source: str | os.PathLike) -> Path:
    """The DICOM image :func:`scan_input` finds (a file, or the only DICOM image of a folder)."""
    return scan_input(source).image


def _why_not_a_dicom_image(path: Path) -> str | None:
    """None for a DICOM file with pixel data; else why it is not one (nothing is opened that could block)."""
    problem = path_problem(path)
    if problem is not None:
        return problem
    try:
        kind = image_format(path)
        if kind != "dicom":
            return f"not DICOM (a {_FORMAT_NAMES.get(kind, kind)} file): this app reads DICOM"
        read_dicom_header(path)  # content check: a '.dcm' name alone does not make a DICOM file
        if not _has_pixel_data(path):
            return "DICOM without pixel data (e.g. a report, a DICOMDIR or a header-only file)"
    except CXRDataError as error:
        return error.problem
    return None


_FORMAT_NAMES = {"pillow": "PNG/JPEG/BMP/TIFF", "nifti": "NIfTI", "itk": "MHA/NRRD"}


def _has_pixel_data(path: Path) -> bool:
    """Whether the DICOM file holds an image; large values are deferred, so pixels are not read."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path, defer_size=1024, force=True)
    except Exception as exc:
        raise CXRDataError(path, f"cannot read DICOM file: {exc}") from exc
    return any(tag in dataset for tag in _IMAGE_STORAGE_ELEMENTS)


def _require_pixel_data(path: Path) -> None:
    if not _has_pixel_data(path):
        raise CXRDataError(path, "no pixel data (a DICOM header without an image, e.g. a report or a header-only file)")


@dataclass
class ChestRadiograph:
    """One loaded radiograph: the file, its DICOM header (no pixels) and the display image in [0, 1]."""

    path: Path
    header: Any  # pydicom.Dataset without pixel data
    image: np.ndarray  # (H, W) float32 in [0, 1], bone bright
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)  # other files of the input folder, and why

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.get("SOPInstanceUID", ""))

    @property
    def study_instance_uid(self) -> str:
        return str(self.header.get("StudyInstanceUID", ""))

    @property
    def series_instance_uid(self) -> str:
        return str(self.header.get("SeriesInstanceUID", ""))


def read_chest_radiograph(path: str | os.PathLike, require_chest: bool = True) -> ChestRadiograph:
    """Read a CR/DX DICOM with the bundle's loader (VOI LUT, MONOCHROME1, chest check).

    Raises:
        CXRDataError: naming the file (not DICOM, no pixel data, not a chest radiograph, ...).
    """
    path = Path(path)
    header = read_dicom_header(path)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not header.get(keyword):
            raise CXRDataError(path, f"DICOM file has no {keyword}; cannot reference it in the report")
    image = load_cxr(path, require_chest=require_chest)
    return ChestRadiograph(path=path, header=header, image=image)
