"""Load one chest X-ray from disk (or from memory) as a float32 image in [0, 1].

:func:`load_cxr` reads PNG/JPEG/BMP/TIFF (Pillow), DICOM (pydicom), NIfTI (nibabel) and
MHA/MHD/NRRD (ITK) and always returns a 2-D ``float32`` array of shape ``(H, W)`` = (rows,
columns), with 0 = black and 1 = white as a radiologist would see the image (bone bright).
:class:`LoadCXR` / :class:`LoadCXRd` wrap it as MONAI transforms returning ``(1, H, W)``.

DICOM pixel pipeline, in the order the standard defines it (PS3.4 N.2)::

    stored values --modality LUT--> modality values (RescaleSlope/Intercept or Modality LUT Sequence)
                  --VOI LUT-------> display values (VOI LUT Sequence, else WindowCenter/WindowWidth,
                                    else the image's own min..max)
                  --MONOCHROME1---> inverted within the VOI output range, so that high = white
                  --scale---------> [0, 1] using the VOI output range (the window's range, not the
                                    image's min..max, so the window's contrast is kept), clipped

The usual radiograph (integer pixels, a rescale or none, one LINEAR or LINEAR_EXACT window) takes
these steps fused, in float32 and in place (about 6x faster on a 2k x 2k CR, same pixels to float32
rounding, tested against the general path); everything else goes through pydicom's functions.
Colour DICOM (RGB, YBR decoded to RGB, PALETTE COLOR) is converted to luminance instead.
Only the first frame of a multi-frame DICOM is used (with a warning).

MONAI's ``LoadImage`` is not used for DICOM because it returns the stored values: it applies
no modality LUT, no VOI LUT or window and no MONOCHROME1 inversion, so a MONOCHROME1
radiograph comes out as a negative and a 15-bit CR image is not comparable with an 8-bit PNG.
Note also that ``LoadImage`` returns 2-D PNGs as (W, H); this module returns (H, W) for
every format, like NumPy, Pillow and torchvision.

NIfTI convention: the first voxel axis (i, "x") is the image's columns and the second (j, "y")
its rows, which is what ITK writes, so ``load_cxr`` returns ``data.T``; to write an ``(H, W)``
image ``img`` as NIfTI that reads back unchanged use ``nib.Nifti1Image(img.T, affine)`` (or
``itk.imwrite(itk.image_from_array(img), path)``). The affine is not applied (no reorientation).

Every problem raises :class:`~bundle.data.errors.CXRDataError` naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from bundle.data.errors import CXRDataError

if TYPE_CHECKING:
    import pydicom
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadCXR",
    "LoadCXRd",
    "array_to_cxr",
    "PartialRangeWarning",
    "load_cxr",
    "path_problem",
    "read_dicom_header",
]

PathLike = str | Path

_PILLOW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_DICOM_EXTENSIONS = (".dcm", ".dicom")
_NIFTI_EXTENSIONS = (".nii", ".nii.gz")
_ITK_EXTENSIONS = (".mha", ".mhd", ".nrrd", ".nhdr")
IMAGE_EXTENSIONS: tuple[str, ...] = (
    _PILLOW_EXTENSIONS + _DICOM_EXTENSIONS + _NIFTI_EXTENSIONS + _ITK_EXTENSIONS
)
"""File name endings :func:`load_cxr` recognises (DICOM is also recognised by content, any name)."""

_PILLOW_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")
# formats recognised by their signature only to name them in the refusal
_UNSUPPORTED_SIGNATURES = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x00\x00\x00\x0cjP  \r\n", "JPEG 2000 (.jp2)"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream (.j2k)"), (b"%PDF", "PDF"), (b"PK\x03\x04", "ZIP archive"),
    (b"\x00\x00\x00\x18ftypheic", "HEIC"), (b"\x00\x00\x00\x1cftypavif", "AVIF"),
)
_SPECIAL_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
}

# BodyPartExamined values (upper case, accents removed) that mean a chest; matched as substrings,
# so "CHEST_LUNG", "CHESTABDOMEN" or "TORAX" (es/pt) count.
_CHEST_BODY_PARTS = ("CHEST", "THORAX", "THORACIC", "LUNG", "TORAX", "TORACE")
# Modalities that are projection radiographs (or unspecified "other").
_RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT"})
# Bit depths of detector data stored in wider containers, tried smallest first (see _scale_integer).
_COMMON_BIT_DEPTHS = (8, 10, 12, 14)
# An image whose values span less than this (one grey level of an 8-bit display) has no contrast.
_MIN_CONTRAST = 1.0 / 255.0
# ITU-R BT.601 luma, the weights Pillow uses for mode "L".
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
# 8-bit grey to [0, 1]: float32(v / 255) for every v, looked up instead of computed pixel by pixel
_UINT8_TO_UNIT = (np.arange(256) / 255.0).astype(np.float32)
_EXIF_ORIENTATION = 0x0112
# float32 bytes of the rows the fused DICOM window processes together: a block stays in the CPU's cache through
# the conversion, scaling and clipping, so the image is read and written once (2 MB: fastest on a 2-core EPYC)
_BLOCK_BYTES = 1 << 21


class _InRange(np.ndarray):
    """A float32 image already in [0, 1] whose min and max are known (``low``, ``high``): :func:`_finish`
    checks them without another pass over the image (the fused DICOM window, 8-bit grey images)."""

    def __new__(cls, values: np.ndarray, low: float, high: float) -> _InRange:
        array = values.view(cls)
        array.low, array.high = low, high
        return array

    def __array_finalize__(self, parent: np.ndarray | None) -> None:
        self.low = self.high = None  # a view or copy of the image is checked in full again




class PartialRangeWarning(UserWarning):
    """A 16-bit image without significant-bits information was scaled by the bits its values use.

    Names the file; silence it with ``warnings.filterwarnings("ignore", category=PartialRangeWarning)``
    for data sets known to hold such files (PadChest's 12-bit PNGs).
    """


# ----------------------------------------------------------------------------------------------
# public API


def load_cxr(path: PathLike, *, require_chest: bool = True, min_size: int = 16) -> np.ndarray:
    """Read a chest X-ray file as a float32 array of shape (H, W) with values in [0, 1].

    Args:
        path: a PNG/JPEG/BMP/TIFF, DICOM (any name if it has the ``DICM`` marker), NIfTI
            (``.nii``/``.nii.gz``) or MHA/MHD/NRRD file.
        require_chest: for DICOM, refuse a file whose BodyPartExamined is not a chest or whose
            Modality is not a radiograph; when ``False`` such files load with a warning.
        min_size: smallest accepted number of rows and of columns.

    Raises:
        CXRDataError: the file is missing, empty, corrupt, of an unknown format, too small,
            not a chest radiograph, has no pixel data, needs a missing DICOM decoder, or holds
            NaN/infinite values.
    """
    path = Path(path)
    image_format = _detect_format(path)
    if image_format == "dicom":
        image = _load_dicom(path, require_chest=require_chest)
    elif image_format == "pillow":
        image = _load_pillow(path)
    elif image_format == "nifti":
        image = _load_nifti(path)
    else:
        image = _load_itk(path)
    return _finish(image, path, min_size)


def list_folder(folder: PathLike) -> tuple[list[Path], list[Path]]:
    """``(entries, hidden)`` below ``folder``, in sorted order: every entry that is not a folder, and the hidden ones.

    Entries are not opened: regular files, special files (pipes, sockets, devices), dangling or
    looping symbolic links all come back, for the loader to read or to describe. Folders
    (also behind symbolic links) are searched, each real folder once; a hidden entry
    (name starting with ``.``) is not searched or returned among the entries.
    """
    entries: list[Path] = []
    hidden: list[Path] = []
    seen: set[str] = set()

    def walk(directory: Path) -> None:
        seen.add(os.path.realpath(directory))
        try:
            with os.scandir(directory) as iterator:
                children = sorted(iterator, key=lambda entry: entry.name)
        except OSError as exc:
            raise CXRDataError(directory, f"cannot list folder: {exc.strerror or exc}") from exc
        for child in children:
            path = Path(child.path)
            if child.name.startswith("."):
                hidden.append(path)
                continue
            try:
                is_folder = child.is_dir()  # follows links; False for a dangling or looping one
            except OSError:
                is_folder = False
            if not is_folder:
                entries.append(path)
            elif os.path.realpath(path) not in seen:
                walk(path)

    walk(Path(folder))
    return entries, hidden


def image_format(path: PathLike) -> str:
    """``"dicom"``, ``"pillow"`` (PNG/JPEG/BMP/TIFF), ``"nifti"`` or ``"itk"``: how :func:`load_cxr` would read ``path``.

    Signatures win over the name; DICOM is recognised with or without its preamble. Reads at
    most the first 132 bytes, and only of a regular file (see :func:`path_problem`).

    Raises:
        CXRDataError: not a regular, non-empty file, or not a format the loader reads.
    """
    return _detect_format(Path(path))


def read_dicom_header(path: PathLike) -> pydicom.Dataset:
    """Return the DICOM data set of ``path`` without its pixel data (fast; for checks).

    Raises:
        CXRDataError: the file is missing, empty or not readable as DICOM.
    """
    path = Path(path)
    _check_file(path)
    return _read_dicom(path, stop_before_pixels=True)


def array_to_cxr(
    array: np.ndarray | torch.Tensor, *, min_size: int = 16, source: str | None = None
) -> np.ndarray:
    """Bring an in-memory image (e.g. a MedMNIST entry) to float32 (H, W) in [0, 1].

    ``uint8`` is divided by 255, ``uint16`` by 65535 (or, for values that use only 8, 10, 12 or 14
    bits, by that depth's maximum, with a :class:`PartialRangeWarning`), ``bool`` maps to 0/1, other
    integer types likewise by their maximum; floating-point arrays are assumed to be in
    [0, 1] already and are clipped. Accepted shapes: (H, W), (1, H, W), (H, W, 1), and colour
    (H, W, 3|4) or (3, H, W), which is converted to luminance.

    Args:
        array: the image.
        min_size: smallest accepted number of rows and of columns.
        source: what to name in error messages (defaults to "in-memory array").
    """
    name = source or "in-memory array"
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    image = _squeeze_to_2d_or_colour(array, name)
    if image.dtype == np.bool_:
        scaled = image.astype(np.float64)
    elif np.issubdtype(image.dtype, np.integer):
        scaled = _integer_to_unit_range(image, name)
    elif np.issubdtype(image.dtype, np.floating):
        scaled = image.astype(np.float64)
        _require_finite(scaled, name)
        scaled = np.clip(scaled, 0.0, 1.0)
    else:
        raise CXRDataError(name, f"unsupported array dtype {image.dtype}")
    if scaled.ndim == 3:  # colour, channels last
        scaled = _luminance(scaled)
    return _finish(scaled, name, min_size)


class LoadCXR(Transform):
    """MONAI transform: path (or in-memory array) -> ``MetaTensor`` of shape (1, H, W), float32 in [0, 1].

    Paths go through :func:`load_cxr` and get ``meta["filename_or_obj"]``; NumPy arrays and
    tensors go through :func:`array_to_cxr`. Returns a plain ``torch.Tensor`` when MONAI meta
    tracking is off (``monai.data.set_track_meta(False)``).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, require_chest: bool = True, min_size: int = 16) -> None:
        self.require_chest = require_chest
        self.min_size = min_size

    def __call__(self, data: PathLike | np.ndarray | torch.Tensor) -> torch.Tensor:
        meta: dict[str, Any] = {}
        if isinstance(data, (np.ndarray, torch.Tensor)):
            if isinstance(data, MetaTensor):
                meta = dict(data.meta)
            image = array_to_cxr(data, min_size=self.min_size)
        elif isinstance(data, (str, Path)):
            image = load_cxr(data, require_chest=self.require_chest, min_size=self.min_size)
            meta["filename_or_obj"] = str(data)
        else:
            raise CXRDataError(
                None, f"expected an image path, NumPy array or tensor, got {type(data).__name__}"
            )
        meta["spatial_shape"] = np.asarray(image.shape)
        meta["original_channel_dim"] = 0  # already channel-first: EnsureChannelFirst is a no-op
        tensor = torch.from_numpy(image[None])
        if not get_track_meta():
            return tensor
        return MetaTensor(tensor, meta=meta)


class LoadCXRd(MapTransform):
    """Dictionary version of :class:`LoadCXR`: replaces ``data[key]`` (path or array) by a (1, H, W) image.

    Args:
        keys, allow_missing_keys: as MONAI's ``MapTransform``.
        require_chest, min_size: as :class:`LoadCXR`.
        on_error: ``"raise"`` (training: a bad file stops the run, after the data check
            has listed them all) or ``"record"`` (inference: a bad file becomes a blank
            ``min_size`` image, and ``data[error_key]`` says what was wrong, so the
            other images of the batch go on; it is ``""`` for good files).
        error_key: where the problem is recorded with ``on_error="record"``.
    """

    backend = LoadCXR.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        require_chest: bool = True,
        min_size: int = 16,
        allow_missing_keys: bool = False,
        on_error: str = "raise",
        error_key: str = "error",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if on_error not in ("raise", "record"):
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        self.loader = LoadCXR(require_chest=require_chest, min_size=min_size)
        self.on_error, self.error_key, self.min_size = on_error, error_key, min_size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.on_error == "record":
            d[self.error_key] = ""
        for key in self.key_iterator(d):
            source = d[key]
            try:
                d[key] = self.loader(source)
            except CXRDataError as error:
                if self.on_error == "raise":
                    if error.advice is None:
                        error.advice = load_advice()
                    raise
                d[self.error_key] = str(error)  # names the file
                name = str(source) if isinstance(source, (str, Path)) else ""
                d[key] = MetaTensor(torch.zeros(1, self.min_size, self.min_size), meta={"filename_or_obj": name})
        return d


#: What to do about an image the loader refused while a run reads its data (the last line the user sees).
LOAD_ADVICE = ("Fix or remove this file; `python scripts/check_dataset.py --dataset ... --dataset_dir ...` lists "
               "every bad file of a data set at once, and training with --skip_bad_records True leaves them out.")
_run_advice: str | None = None


def set_load_advice(advice: str | None) -> None:
    """The advice of this process's run (None: :data:`LOAD_ADVICE`): training sets one that names its own data
    set (:func:`bundle.data.check.check_splits`), so the command it gives can be pasted as it is."""
    global _run_advice
    _run_advice = advice


def load_advice() -> str:
    """What to do about a refused image in this run: the run's own advice, else :data:`LOAD_ADVICE`."""
    return _run_advice or LOAD_ADVICE


# ----------------------------------------------------------------------------------------------
# format detection and common steps


def path_problem(path: PathLike) -> str | None:
    """What keeps ``path`` from being an image file, without opening it; None for a non-empty regular file.

    Looks only at the file system entry (``lstat``/``stat``), so a named pipe, socket or device
    is described and never opened (opening a FIFO blocks until something writes to it). The
    problems: "file does not exist", "dangling symbolic link ...", "symbolic link loop ...",
    "is a directory ...", "is a named pipe (FIFO) ...", "is a socket ...", "is a character /
    block device ...", "cannot read file: ...", "empty file (0 bytes)".
    """
    name = os.fspath(path)
    try:
        link = os.lstat(name)
    except FileNotFoundError:
        return "file does not exist"
    except OSError as exc:
        return f"cannot read file: {_reason(exc)}"
    try:
        info = os.stat(name)
    except FileNotFoundError:
        if stat.S_ISLNK(link.st_mode):
            return f"dangling symbolic link (to {os.readlink(name)!r}, which does not exist)"
        return "file does not exist"  # a parent folder is a dangling link
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself), not an image file"
        return f"cannot read file: {_reason(exc)}"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        kind = _SPECIAL_FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        return f"is {kind}, not an image file (skipped without opening it)"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def _check_file(path: Path) -> None:
    problem = path_problem(path)
    if problem is not None:
        raise CXRDataError(path, problem)


def _detect_format(path: Path) -> str:
    """Return "dicom", "pillow", "nifti" or "itk"; signatures win over the file name."""
    _check_file(path)
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise CXRDataError(path, f"cannot read file: {_reason(exc)}") from exc
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PILLOW_SIGNATURES):
        return "pillow"
    name = path.name.lower()
    if name.endswith(_DICOM_EXTENSIONS):
        return "dicom"
    if name.endswith(_PILLOW_EXTENSIONS):
        return "pillow"
    if name.endswith(_NIFTI_EXTENSIONS):
        return "nifti"
    if name.endswith(_ITK_EXTENSIONS):
        return "itk"
    if _looks_like_bare_dicom(head):  # a DICOM data set without preamble and 'DICM', any name
        return "dicom"
    suffix = "".join(path.suffixes[-2:]) or "none"
    known = next((fmt for signature, fmt in _UNSUPPORTED_SIGNATURES if head.startswith(signature)), None)
    if known is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        known = "WebP"
    what = f"{known} file, a format the loader does not read" if known else \
        f"unknown image format (extension '{suffix}', no DICOM/PNG/JPEG/BMP/TIFF signature)"
    raise CXRDataError(path, f"{what}; supported: {', '.join(IMAGE_EXTENSIONS)} or DICOM with any name")


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A DICOM data set written without the 128-byte preamble and 'DICM' (allowed by older software).

    Such a file starts with its first element, of group 0x0002 (file meta) or 0x0008 (identifying):
    the tag in little-endian order, then two upper-case letters (explicit VR) or a 4-byte length
    (implicit VR). :func:`_read_dicom` then checks that image elements are really there.
    """
    if len(head) < 8:
        return False
    group, element = int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    return int.from_bytes(head[4:8], "little") < 0x1000  # implicit VR: a short first value


def _finish(image: np.ndarray, path: PathLike, min_size: int) -> np.ndarray:
    """Check shape, size and values of a scaled image a loader made (float32 ones are clipped in place); return float32 in [0, 1]."""
    if image.ndim != 2:
        raise CXRDataError(path, f"expected a 2-D image, got shape {tuple(image.shape)}")
    rows, cols = image.shape
    if rows < min_size or cols < min_size:
        raise CXRDataError(
            path, f"image is {cols}x{rows}, smaller than the minimum {min_size}x{min_size} pixels"
        )
    if isinstance(image, _InRange):  # fused DICOM window: clipped, min and max known
        low, high = image.low, image.high
        image = image.view(np.ndarray)
        if low is not None and high is not None:
            _require_contrast(low, high, path)  # finite: the window's output is clipped to [0, 1]
            return image
    if image.dtype == np.float32 and image.flags.c_contiguous and image.flags.writeable:
        # the usual case (DICOM windowing, pillow): two reductions instead of whole-image temporaries
        low, high = float(image.min()), float(image.max())  # NaN or +-inf anywhere shows in these
        if not (np.isfinite(low) and np.isfinite(high)):
            raise CXRDataError(path, "image contains NaN or infinite values")
        _require_contrast(min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0), path)
        if low < 0.0 or high > 1.0:
            np.clip(image, 0.0, 1.0, out=image)
        return image
    _require_finite(image, path)
    image = np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)
    _require_contrast(float(image.min()), float(image.max()), path)
    return image


def _require_contrast(low: float, high: float, path: PathLike) -> None:
    """Refuse an image without contrast (all black, all white, one grey): it holds nothing to classify,
    and a network would still give it confident-looking probabilities."""
    if high - low >= _MIN_CONTRAST:
        return
    if high == low:
        shade = "all black" if high <= 0.0 else "all white" if high >= 1.0 else f"all grey {high:.3g}"
        detail = f"every pixel is the same ({shade})"
    else:
        detail = f"values span only {low:.4f}..{high:.4f}, less than one 8-bit grey level"
    raise CXRDataError(path, f"constant image: {detail}; nothing to classify")


def _require_finite(values: np.ndarray, path: PathLike) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise CXRDataError(path, "image contains NaN or infinite values")


def _min_max_scale(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] in float64; a constant image becomes zeros."""
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., 3 or 4) -> (...) grey in float64; a 4th (alpha) channel is ignored."""
    return rgb[..., :3].astype(np.float64) @ _LUMA_WEIGHTS


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _integer_to_unit_range(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype == np.uint8:
        return values / 255.0
    if values.dtype == np.uint16:
        return _scale_integer(values, 16, None, name)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise CXRDataError(name, f"{values.dtype} values {low}..{high} are neither 8- nor 16-bit")
    return values / 255.0 if high <= 255 else _scale_integer(values, 16, None, name)


def _squeeze_to_2d_or_colour(array: np.ndarray, name: str) -> np.ndarray:
    """(H, W) stays; (1, H, W)/(H, W, 1) -> (H, W); (3, H, W) -> (H, W, 3); (H, W, 3|4) stays."""
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        if array.shape[0] == 1:
            return array[0]
        if array.shape[-1] == 1:
            return array[..., 0]
        if array.shape[-1] in (3, 4):
            return array
        if array.shape[0] in (3, 4):
            return np.moveaxis(array, 0, -1)
    raise CXRDataError(name, f"cannot interpret an array of shape {tuple(array.shape)} as a 2-D image")


# ----------------------------------------------------------------------------------------------
# Pillow: PNG, JPEG, BMP, TIFF


def _load_pillow(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    png = _read_png_header(path)
    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so truncated files raise here
            if getattr(img, "n_frames", 1) > 1:
                warnings.warn(f"{path}: {img.n_frames} frames, using the first", stacklevel=3)
            # phone/web JPEGs may carry an EXIF rotation; exif_transpose copies the image even without one
            upright = ImageOps.exif_transpose(img) if img.getexif().get(_EXIF_ORIENTATION, 1) != 1 else img
            return _pillow_to_unit_range(upright, path, png)
    except CXRDataError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise CXRDataError(path, f"cannot decode image: {_reason(exc)}") from exc


def _pillow_to_unit_range(img: Image.Image, path: Path, png: _PNGHeader | None = None) -> np.ndarray:
    mode = img.mode
    significant = png.significant_bits if png is not None else None
    if mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF)
        values = np.asarray(img)
        if np.issubdtype(values.dtype, np.unsignedinteger):
            return _scale_integer(values, 16, significant, path)
        return _min_max_scale(values)
    if mode == "I":  # 32-bit int: 16-bit PNGs on some Pillow versions, int TIFFs
        values = np.asarray(img)
        bits = 16 if png is not None else _pillow_bits_per_sample(img, default=16)
        if values.min() >= 0 and values.max() <= 2**bits - 1:
            return _scale_integer(values, bits, significant, path)
        return _min_max_scale(values)
    if mode == "F":  # float TIFF: keep if already in [0, 1]
        values = np.asarray(img, dtype=np.float64)
        _require_finite(values, path)
        return values if values.min() >= 0 and values.max() <= 1 else _min_max_scale(values)
    if mode == "1":
        return np.asarray(img, dtype=np.float64)
    if png is not None and png.bit_depth == 16:
        _refuse_partial_range_colour_png(img, path, png)
    if mode in ("L", "LA", "La"):
        values = np.asarray(img) if mode == "L" else np.asarray(img.getchannel(0))
        if significant is not None:
            return _scale_integer(values, 8, significant, path)
        # one pass to float32 through a table of the 256 values (v / 255 rounded to float32: today's numbers);
        # the range from the 8-bit values, so that _finish need not read the float image again
        return _InRange(_UINT8_TO_UNIT.take(values), float(_UINT8_TO_UNIT[values.min()]),
                        float(_UINT8_TO_UNIT[values.max()]))
    # RGB, RGBA, P, PA, CMYK, YCbCr, ...: 8-bit colour -> luminance
    return _luminance(np.asarray(img.convert("RGB"))) / 255.0


class _PNGHeader(NamedTuple):
    bit_depth: int
    colour_type: int
    significant_bits: int | None  # sBIT of the grey (or first colour) channel; None without sBIT


def _read_png_header(path: Path) -> _PNGHeader | None:
    """Bit depth, colour type and significant bits (``sBIT``) of a PNG; None for other files.

    Pillow does not report ``sBIT``, so the chunks before the image data are walked here
    (``sBIT`` must come before ``IDAT``); nothing is decompressed.
    """
    try:
        with path.open("rb") as stream:
            if stream.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            bit_depth = colour_type = None
            significant = None
            for _ in range(256):  # chunks before IDAT: IHDR, PLTE, sBIT, text, ICC ...
                header = stream.read(8)
                if len(header) < 8:
                    break
                length, kind = int.from_bytes(header[:4], "big"), header[4:]
                if kind == b"IHDR":
                    data = stream.read(length)
                    bit_depth, colour_type = data[8], data[9]
                    stream.seek(4, os.SEEK_CUR)
                elif kind == b"sBIT":
                    data = stream.read(length)
                    significant = data[0] if data else None
                    stream.seek(4, os.SEEK_CUR)
                elif kind in (b"IDAT", b"IEND"):
                    break
                else:
                    stream.seek(length + 4, os.SEEK_CUR)
    except (OSError, IndexError):
        return None  # Pillow then reports the damaged file
    if bit_depth is None:
        return None
    if significant is not None and not 1 <= significant <= bit_depth:
        warnings.warn(f"{path}: ignoring an sBIT chunk of {significant} bits in a {bit_depth}-bit PNG", stacklevel=4)
        significant = None
    return _PNGHeader(bit_depth, colour_type, significant)


def _scale_integer(values: np.ndarray, container_bits: int, significant_bits: int | None,
                   source: PathLike) -> np.ndarray:
    """Integer grey values (>= 0) to [0, 1] by the bits the data really use, not only the container's.

    Detector data of 10, 12 or 14 bits are often stored in 16-bit PNG/TIFF containers as they are
    (0..4095 for 12 bits): divided by 65535 they would load at about 6% brightness. The rule:

    1. The file says its significant bits ``b`` (PNG ``sBIT``): values up to ``2**b - 1`` are raw
       ``b``-bit data, scaled by ``2**b - 1``; larger values mean the writer scaled the samples up to
       the container, as the PNG standard asks, and the container's maximum is used.
    2. Otherwise, for containers of more than 8 bits: the smallest of 8, 10, 12, 14 bits that holds
       the image's maximum is taken as its depth, with a :class:`PartialRangeWarning` naming the file;
       an image that needs more bits is scaled by the container's maximum.
    """
    high = int(values.max()) if values.size else 0
    if significant_bits is not None and significant_bits < container_bits:
        limit = 2**significant_bits - 1
        return values / float(limit if high <= limit else 2**container_bits - 1)
    if significant_bits is None and container_bits > 8 and high > int(values.min()):  # (constant: refused later)
        for bits in _COMMON_BIT_DEPTHS:
            if bits < container_bits and high <= 2**bits - 1:
                warnings.warn(PartialRangeWarning(
                    f"{source}: {container_bits}-bit image without significant-bits information (PNG sBIT) uses "
                    f"values {int(values.min())}..{high} only: read as {bits}-bit data (scaled by {2**bits - 1}, "
                    f"not {2**container_bits - 1})"), stacklevel=5)
                return values / float(2**bits - 1)
    return values / float(2**container_bits - 1)


def _refuse_partial_range_colour_png(img: Image.Image, path: Path, png: _PNGHeader) -> None:
    """Pillow reads 16-bit colour PNGs at 8 bits per channel (the high byte): fine for full-range data,
    a few grey levels for 10- to 14-bit data, which is refused rather than loaded as a dark smudge."""
    high = int(np.asarray(img.convert("RGB")).max())
    partial = (png.significant_bits is not None and png.significant_bits <= 14) or high < 128
    if partial:
        raise CXRDataError(
            path, f"16-bit colour PNG whose values use only part of the 16-bit range (sBIT "
                  f"{png.significant_bits or 'absent'}, highest 8-bit value {high}): read at 8 bits per channel it "
                  f"would keep {high + 1} grey levels; save it as a 16-bit greyscale PNG")


def _pillow_bits_per_sample(img: Image.Image, default: int) -> int:
    tags = getattr(img, "tag_v2", None)  # TIFF only
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if bits else default


# ----------------------------------------------------------------------------------------------
# NIfTI and ITK formats


def _load_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float64))
    except Exception as exc:  # ImageFileError, EOFError/OSError (truncated .gz), ...
        raise CXRDataError(path, f"cannot decode image: {_reason(exc)}") from exc
    squeezed = np.squeeze(volume)
    if squeezed.ndim != 2:
        raise CXRDataError(path, f"NIfTI image has shape {volume.shape}; expected 2-D or a single slice")
    _require_finite(squeezed, path)
    return _min_max_scale(squeezed.T)  # (x, y) = (columns, rows) -> (rows, columns)


def _load_itk(path: Path) -> np.ndarray:
    import itk  # slow to import (seconds): only when needed

    try:
        itk_image = itk.imread(str(path))
        values = np.asarray(itk.array_from_image(itk_image))  # (rows, columns[, components])
        components = itk_image.GetNumberOfComponentsPerPixel()
    except Exception as exc:  # RuntimeError("Could not create IO object ..."), truncated data, ...
        raise CXRDataError(path, f"cannot decode image: {_reason(exc)}") from exc
    if components > 1:
        values = _luminance(values) if components >= 3 else values[..., 0]
    squeezed = np.squeeze(values)
    if squeezed.ndim != 2:
        raise CXRDataError(path, f"image has shape {values.shape}; expected 2-D or a single slice")
    squeezed = squeezed.astype(np.float64)
    _require_finite(squeezed, path)
    return _min_max_scale(squeezed)


# ----------------------------------------------------------------------------------------------
# DICOM


def _read_dicom(path: Path, *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        try:
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # No preamble/'DICM' (a bare data set, allowed for .dcm files): read it anyway.
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except Exception as exc:
        raise CXRDataError(path, f"cannot decode image: {_reason(exc)}") from exc
    if "SOPClassUID" not in ds and "Rows" not in ds:
        raise CXRDataError(
            path, "cannot decode image: not a DICOM file (no 'DICM' marker, no image elements)"
        )
    if "TransferSyntaxUID" not in ds.file_meta:  # bare data set: pixel decoding needs one
        implicit_vr, little_endian = ds.original_encoding
        if implicit_vr:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    return ds


def _load_dicom(path: Path, *, require_chest: bool) -> np.ndarray:
    ds = _read_dicom(path)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise CXRDataError(
            path, "no pixel data (a DICOM header without an image, e.g. a report or a header-only file)"
        )
    _check_chest_radiograph(ds, path, require_chest=require_chest)
    _check_native_pixel_length(ds, path, int(ds.get("NumberOfFrames", 1) or 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    fast = _native_window_float32(ds, photometric)  # the usual uncompressed radiograph: one pass from the bytes
    if fast is not None:
        return fast
    pixels = _decode_dicom_pixels(ds, path)
    return _dicom_to_unit_range(pixels, ds, path)


def _check_chest_radiograph(ds: pydicom.Dataset, path: Path, *, require_chest: bool) -> None:
    problems = []
    body_part = str(ds.get("BodyPartExamined", "") or "").strip()
    if body_part and not _is_chest(body_part):
        problems.append(f"BodyPartExamined is '{body_part}', not a chest")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality not in _RADIOGRAPH_MODALITIES:
        problems.append(
            f"Modality is '{modality}', not a radiograph ({'/'.join(sorted(_RADIOGRAPH_MODALITIES))})"
        )
    for problem in problems:
        if require_chest:
            raise CXRDataError(path, f"{problem}; pass require_chest=False to load it anyway")
        warnings.warn(f"{path}: {problem}; loading it because require_chest=False", stacklevel=4)


def _is_chest(body_part: str) -> bool:
    plain = unicodedata.normalize("NFKD", body_part).encode("ascii", "ignore").decode().upper()
    return any(word in plain for word in _CHEST_BODY_PARTS)


def _decoder_install_hint(transfer_syntax: Any) -> str:
    keyword = getattr(transfer_syntax, "keyword", "") or ""
    if "JPEG2000" in keyword or "HTJ2K" in keyword:
        return "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)"
    if "JPEGLS" in keyword:
        return "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls, or python-gdcm)"
    if "JPEG" in keyword:
        return "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)"
    if "RLE" in keyword:
        return "pip install pylibjpeg pylibjpeg-rle"
    return "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg (or python-gdcm)"


def _decode_dicom_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """Decode the (first) frame: (rows, columns) or (rows, columns, samples); colour as RGB."""
    from pydicom.pixels import get_decoder, pixel_array

    transfer_syntax = ds.file_meta.TransferSyntaxUID
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        warnings.warn(f"{path}: multi-frame DICOM ({frames} frames), using the first", stacklevel=4)
    _check_native_pixel_length(ds, path, frames)
    try:
        return pixel_array(ds, index=0 if frames > 1 else None)
    except NotImplementedError as exc:  # no decoder exists for this transfer syntax
        raise CXRDataError(
            path, f"cannot decode image: transfer syntax '{transfer_syntax.name}' is not supported by pydicom"
        ) from exc
    except RuntimeError as exc:
        # pydicom 3 raises RuntimeError("Unable to decompress '<syntax>' pixel data because all
        # plugins are missing dependencies ...") when no decoder plugin is installed.
        decoder = get_decoder(transfer_syntax)
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
            raise CXRDataError(
                path,
                f"cannot decode compressed pixel data ('{transfer_syntax.name}', {transfer_syntax}): "
                f"no decoder installed ({missing}); {_decoder_install_hint(transfer_syntax)}",
            ) from exc
        raise CXRDataError(path, f"cannot decode image: {_reason(exc)}") from exc
    except Exception as exc:  # truncated pixel data, inconsistent header, ...
        raise CXRDataError(path, f"cannot decode image: {_reason(exc)}") from exc


def _check_native_pixel_length(ds: pydicom.Dataset, path: Path, frames: int) -> None:
    """Refuse uncompressed pixel data whose length is not what Rows x Columns x frames x samples x bits say.

    pydicom drops excess bytes with a warning (naming no file), which loads a sheared image when
    Rows or Columns are wrong; a short one fails in pydicom. Compressed (encapsulated) data is
    checked by its decoder. One byte of padding to an even length is allowed.
    """
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return
    keyword = next((k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
    if keyword is None:
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword) or int(ds.BitsAllocated)
        actual = len(ds[keyword].value)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise CXRDataError(path, f"cannot decode image: incomplete image header ({_reason(exc)})") from exc
    values = rows * columns * frames * samples
    expected = (values * bits + 7) // 8
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "YBR_FULL_422":
        expected = expected // 3 * 2  # chroma subsampled: 2 samples' worth per pixel
    if actual in (expected, expected + expected % 2):
        return
    why = "the file is cut short, or the header's size is wrong" if actual < expected else \
        "the header does not describe the pixels: read as it is, the image would be sheared"
    raise CXRDataError(
        path,
        f"cannot decode image: pixel data is {actual} bytes, but Rows x Columns x frames x samples x bits = "
        f"{rows} x {columns} x {frames} x {samples} x {bits} bits need {expected} ({why})",
    )


def _dicom_to_unit_range(pixels: np.ndarray, ds: pydicom.Dataset, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return _luminance(rgb) / float(np.iinfo(rgb.dtype).max)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or pixels.ndim == 3:
        if pixels.ndim != 3:
            raise CXRDataError(
                path, f"PhotometricInterpretation '{photometric}' but single-sample pixel data"
            )
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(_luminance(pixels) / (2.0**bits - 1), 0.0, 1.0)

    fast = _linear_window_float32(pixels, ds, photometric)
    if fast is not None:
        return fast
    _require_finite(pixels, path)
    values = apply_modality_lut(pixels, ds)
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        slope, intercept = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
        rescale = "stored pixels" if float(np.min(pixels)) == float(np.max(pixels)) else \
            f"modality LUT / rescale (RescaleSlope {slope}, RescaleIntercept {intercept})"
        raise CXRDataError(path, f"constant image: every pixel is {low:.6g} after the {rescale}; nothing to classify")
    try:
        if _has_voi_lut_sequence(ds) or _has_window(ds):
            low, high = _voi_output_range(ds)
            values = apply_voi_lut(values, ds)
    except (ValueError, NotImplementedError, AttributeError, IndexError) as exc:
        warnings.warn(
            f"{path}: ignoring unusable VOI LUT/window ({_reason(exc)}), using min-max", stacklevel=4
        )
        low, high = float(np.min(values)), float(np.max(values))
    values = np.asarray(values, dtype=np.float64)
    if photometric == "MONOCHROME1":  # 0 = white: invert within the display range
        values = (low + high) - values
    if high == low:
        return np.zeros_like(values)  # refused as a constant image by _finish
    # (low, high) is the VOI output's (black, white); with a negative RescaleSlope pydicom gives a falling
    # range (black above white), which the same division maps the right way round
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _linear_window_float32(pixels: np.ndarray, ds: pydicom.Dataset, photometric: str) -> np.ndarray | None:
    """The usual radiograph in float32: integer pixels, rescale or none, one LINEAR window.

    The same numbers (to float32 rounding) as the general path below (pydicom's modality LUT and
    ``apply_voi_lut`` in float64, inversion, scaling to the window's output range), which makes several
    float64 passes over the image: 0.2 s for a 1955 x 1841 CR on a busy CPU, against a few ms here,
    the largest part of single-image inference. Returns None for anything else (a VOI LUT or modality
    LUT sequence, SIGMOID, a window the general path refuses or warns about, float pixels, a
    non-positive rescale slope), which then takes the general path.
    """
    if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer):
        return None
    window = _linear_window(ds, photometric)
    return None if window is None else _apply_window(pixels, *window)


def _linear_window(ds: pydicom.Dataset, photometric: str) -> tuple[float, float] | None:
    """``(scale, offset)`` of the affine map stored value -> [0, 1] display value (before clipping) that rescale, one
    LINEAR / LINEAR_EXACT window and the MONOCHROME1 inversion make together; None when the header has something
    else (see :func:`_linear_window_float32`)."""
    if not _has_window(ds) or _has_voi_lut_sequence(ds) or ds.get("ModalityLUTSequence"):
        return None
    try:
        function = getattr(ds, "VOILUTFunction", "LINEAR")
        function = function.upper() if isinstance(function, str) else None
        center, width = (ds[key].value[0] if ds[key].VM > 1 else ds[key].value
                         for key in ("WindowCenter", "WindowWidth"))
        center, width = float(center), float(width)
        slope = intercept = None
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:  # pydicom's condition for the rescale
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return None
    if function == "LINEAR" and width > 1:
        center, width = center - 0.5, width - 1.0  # PS3.3 C.11.2.1.2.1
    elif function != "LINEAR_EXACT" or width <= 0:
        return None
    if slope is not None and not slope > 0:
        return None
    if not all(np.isfinite(v) for v in (center, width, slope or 1.0, intercept or 0.0)):
        return None
    # rescale, window and (MONOCHROME1: 0 = white) inversion folded into one affine map:
    # ((p * slope + intercept) - center) / width + 0.5, or 1 minus that
    slope, intercept = (1.0, 0.0) if slope is None else (slope, intercept)
    scale, offset = slope / width, (intercept - center) / width + 0.5
    if photometric == "MONOCHROME1":
        scale, offset = -scale, 1.0 - offset
    return scale, offset


def _apply_window(pixels: np.ndarray, scale: float, offset: float, mask: int | None = None) -> _InRange:
    """``clip(p * scale + offset, 0, 1)`` in float32 (the same operations, so the same numbers, as
    ``v = p.astype(float32); v *= scale; v += offset; clip``), block by block: each block of rows is (masked to its
    stored bits,) converted, scaled and clipped while it is in the CPU's cache, so the image is read and written
    once instead of four times, and its min and max come with it."""
    values = np.empty(pixels.shape, dtype=np.float32)
    scale32, offset32 = np.float32(scale), np.float32(offset)
    step = max(1, _BLOCK_BYTES // max(1, 4 * pixels.shape[1]))
    low, high = np.inf, -np.inf
    for start in range(0, pixels.shape[0], step):
        block = values[start:start + step]
        source = pixels[start:start + step]
        smallest, largest = source.min(), source.max()
        if mask is not None and largest > mask:  # bits above BitsStored are set: clear them, as pydicom does
            source = source & mask
            smallest, largest = source.min(), source.max()
        block[...] = source
        block *= scale32
        block += offset32
        # the map is monotonic, so the block's extremes are the images of its extreme stored values (the same
        # float32 operations on them): clip only blocks that leave [0, 1], and no pass to find min and max
        ends = np.array([smallest, largest]).astype(np.float32) * scale32 + offset32
        if ends.min() < 0.0 or ends.max() > 1.0:
            np.clip(block, 0.0, 1.0, out=block)
        ends = np.clip(ends, 0.0, 1.0)
        low, high = min(low, float(ends.min())), max(high, float(ends.max()))
    return _InRange(values, low, high)


def _native_window_float32(ds: pydicom.Dataset, photometric: str) -> np.ndarray | None:
    """The usual uncompressed radiograph straight from its pixel bytes: decoding, masking of the bits above
    ``BitsStored`` and the window in one blocked pass (:func:`_apply_window`) over a zero-copy view of the bytes.

    pydicom's decoder copies the pixel data to mask the unused bits (a whole-image pass, most of its time): the
    result here is the same (tested against ``pixel_array`` + :func:`_linear_window_float32`). Only for what that
    equivalence is simple for: little-endian native transfer syntaxes, one frame, one sample, 8 or 16 bits
    allocated, unsigned, MONOCHROME1/2 with a LINEAR window; None (the general path) for anything else.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if photometric not in ("MONOCHROME1", "MONOCHROME2") or "PixelData" not in ds:
        return None
    if ds.file_meta.TransferSyntaxUID not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.get("BitsStored") or ds.BitsAllocated)
        unsigned = int(ds.get("PixelRepresentation", 0) or 0) == 0
        single = int(ds.get("SamplesPerPixel", 1) or 1) == 1 and int(ds.get("NumberOfFrames", 1) or 1) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    if not (single and unsigned and allocated in (8, 16) and 0 < stored <= allocated):
        return None
    window = _linear_window(ds, photometric)
    if window is None:
        return None
    data = ds.PixelData
    dtype = np.dtype("u1" if allocated == 8 else "<u2")
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < rows * columns * dtype.itemsize:
        return None
    pixels = np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)
    return _apply_window(pixels, *window, mask=(1 << stored) - 1 if stored < allocated else None)


def _has_window(ds: pydicom.Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _has_voi_lut_sequence(ds: pydicom.Dataset) -> bool:
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and None not in (sequence[0].get("LUTDescriptor"), sequence[0].get("LUTData"))


def _voi_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The (min, max) that pydicom's VOI step can output, found by probing it (as apply_voi_lut chooses)."""
    from pydicom.pixels.processing import apply_voi, apply_windowing

    if _has_voi_lut_sequence(ds):  # apply_voi_lut prefers the LUT over the window
        entries, first_mapped, _ = ds.VOILUTSequence[0].LUTDescriptor
        table = apply_voi(np.arange(first_mapped, first_mapped + (entries or 2**16)), ds)
        return float(table.min()), float(table.max())
    # far below / above any window: every VOI function (LINEAR, LINEAR_EXACT, SIGMOID) saturates
    with np.errstate(over="ignore"):
        low, high = apply_windowing(np.array([-1e300, 1e300]), ds)
    return float(low), float(high)
