"""load_cxr's faster reader gives the pixels of the reader before it (issue 24), on every image class of docs/inputs.md.

``reference_load_cxr`` below is a copy of the path as it was before the reader was made faster (Pillow's
``exif_transpose`` on every image, 8-bit grey divided by 255 in float64, the DICOM window in four whole-image
float32 passes after pydicom's ``pixel_array``, ``_finish`` with its own reductions and clip): the parts that
changed are copied here, the parts that did not are the module's own.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from bundle.data import io
from conftest import data_root, require_shared
from test_io import _png16, write_dicom

# ---------------------------------------------------------------------------------------------- today's path


def _reference_linear_window(pixels, ds, photometric):
    window = io._linear_window(ds, photometric) if pixels.ndim == 2 and np.issubdtype(pixels.dtype, np.integer) \
        else None
    if window is None:
        return None
    scale, offset = window
    values = pixels.astype(np.float32)
    values *= np.float32(scale)
    values += np.float32(offset)
    np.clip(values, 0.0, 1.0, out=values)
    return values


def _reference_finish(image, path, min_size):
    if image.dtype == np.float32 and image.flags.c_contiguous and image.flags.writeable:
        low, high = float(image.min()), float(image.max())
        io._require_contrast(min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0), path)
        if low < 0.0 or high > 1.0:
            np.clip(image, 0.0, 1.0, out=image)
        return image
    io._require_finite(image, path)
    image = np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)
    io._require_contrast(float(image.min()), float(image.max()), path)
    return image


def _reference_pillow(path):
    png = io._read_png_header(path)
    with Image.open(path) as img:
        img.load()
        upright = ImageOps.exif_transpose(img)
        if upright.mode in ("L", "LA", "La"):
            values = np.asarray(upright.getchannel(0))
            significant = png.significant_bits if png is not None else None
            return io._scale_integer(values, 8, significant, path) if significant is not None else values / 255.0
        return io._pillow_to_unit_range(upright, path, png)


def reference_load_cxr(path, monkeypatch):
    path = Path(path)
    kind = io._detect_format(path)
    if kind == "dicom":
        ds = io._read_dicom(path)
        io._check_chest_radiograph(ds, path, require_chest=True)
        with monkeypatch.context() as patch:
            patch.setattr(io, "_linear_window_float32", _reference_linear_window)
            image = io._dicom_to_unit_range(io._decode_dicom_pixels(ds, path), ds, path)
            image = np.asarray(image).view(np.ndarray).copy()
    elif kind == "pillow":
        image = _reference_pillow(path)
    elif kind == "nifti":
        image = io._load_nifti(path)
    else:
        image = io._load_itk(path)
    return _reference_finish(image, path, 16)


# ---------------------------------------------------------------------------------------------- the corpus


def _grey(rows=40, cols=56, seed=0):
    rng = np.random.default_rng(seed)
    return (np.add.outer(np.arange(rows), np.arange(cols)) * 255 // (rows + cols) + rng.integers(0, 8, (rows, cols))
            ).clip(0, 255).astype(np.uint8)


def _corpus(folder: Path) -> list[Path]:
    import nibabel as nib

    grey = _grey()
    files = []

    def save(name, image, **kwargs):
        image.save(folder / name, **kwargs)
        files.append(folder / name)

    for suffix in ("png", "jpg", "bmp", "tif"):
        save(f"grey8.{suffix}", Image.fromarray(grey))
    save("grey_alpha.png", Image.fromarray(np.dstack([grey, np.full_like(grey, 200)]), mode="LA"))
    save("rgb.png", Image.fromarray(np.dstack([grey, grey[::-1], grey[:, ::-1]])))
    save("rgba.png", Image.fromarray(np.dstack([grey, grey[::-1], grey, np.full_like(grey, 255)])))
    save("palette.png", Image.fromarray(grey).convert("P"))
    save("cmyk.jpg", Image.fromarray(np.dstack([grey] * 3)).convert("CMYK"))
    exif = Image.Exif()
    exif[0x0112] = 8
    save("rotated.jpg", Image.fromarray(grey), exif=exif, quality=100)
    frames = [Image.fromarray(grey), Image.fromarray(grey[::-1].copy())]
    frames[0].save(folder / "stack.tif", save_all=True, append_images=frames[1:])
    files.append(folder / "stack.tif")
    save("float.tif", Image.fromarray((grey / 255.0).astype(np.float32)))
    wide = grey.astype(np.uint16) * 257
    save("grey16.png", Image.fromarray(wide))
    files.append(_png16(folder / "sbit12.png", grey.astype(np.uint16) * 16, sbit=12))
    files.append(_png16(folder / "partial12.png", grey.astype(np.uint16) * 16))
    nib.save(nib.Nifti1Image(grey.T.astype(np.float32), np.eye(4)), folder / "grey.nii.gz")
    files.append(folder / "grey.nii.gz")
    import itk

    itk.imwrite(itk.image_from_array(grey.astype(np.float32)), str(folder / "grey.mha"))
    files.append(folder / "grey.mha")
    ramp = (np.arange(64 * 80).reshape(64, 80) % 4096).astype(np.uint16)
    dicoms = {
        "window": {"WindowCenter": 2048, "WindowWidth": 4096},
        "narrow": {"WindowCenter": 1000, "WindowWidth": 201},
        "monochrome1": {"WindowCenter": 1500, "WindowWidth": 2500, "PhotometricInterpretation": "MONOCHROME1"},
        "rescale": {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 3000, "WindowWidth": 5001},
        "exact": {"WindowCenter": 1000, "WindowWidth": 300, "VOILUTFunction": "LINEAR_EXACT"},
        "sigmoid": {"WindowCenter": 2048, "WindowWidth": 1000, "VOILUTFunction": "SIGMOID"},
        "negative_slope": {"RescaleSlope": -1, "RescaleIntercept": 0, "WindowCenter": -2048, "WindowWidth": 4096},
        "no_window": {},
        "bits16": {"BitsStored": 16, "HighBit": 15, "WindowCenter": 2048, "WindowWidth": 4096},
    }
    for name, elements in dicoms.items():
        files.append(write_dicom(folder / f"{name}.dcm", ramp, **elements))
    files.append(write_dicom(folder / "signed.dcm", ramp.astype(np.int16) - 2048, PixelRepresentation=1,
                             WindowCenter=-100, WindowWidth=3000))
    files.append(write_dicom(folder / "eight_bit.dcm", grey, BitsAllocated=8, BitsStored=8, HighBit=7,
                             WindowCenter=128, WindowWidth=256))
    files.append(write_dicom(folder / "frames.dcm", np.stack([ramp, ramp[::-1]]), NumberOfFrames=2,
                             WindowCenter=2048, WindowWidth=4096))
    files.append(write_dicom(folder / "rgb.dcm", np.dstack([grey, grey, grey]), SamplesPerPixel=3,
                             PhotometricInterpretation="RGB", PlanarConfiguration=0, BitsAllocated=8,
                             BitsStored=8, HighBit=7))
    return files


def _real_files() -> list[Path]:
    root = data_root()
    files = sorted((root / "nih_sample" / "images").glob("*.png"))
    files += [root / "dicom" / "chest_cr_monochrome1.dcm", root / "dicom" / "chest_cr_monochrome1_j2k.dcm"]
    subset = root / "nih14_subset" / "images"
    if subset.is_dir():
        rgba = [p for p in sorted(subset.glob("*.png"))[:200] if Image.open(p).mode != "L"][:2]
        files += sorted(subset.glob("*.png"))[:3] + rgba
    files += sorted((root / "cxr3" / "images").glob("*.png"))[:3] if (root / "cxr3" / "images").is_dir() else []
    return [p for p in files if p.is_file()]


def test_every_image_class_reads_as_before(tmp_path, monkeypatch):
    files = _corpus(tmp_path)
    assert len(files) >= 30
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new, old = io.load_cxr(path), reference_load_cxr(path, monkeypatch)
        assert type(new) is np.ndarray and new.dtype == old.dtype == np.float32 and new.shape == old.shape, path.name
        np.testing.assert_array_equal(new, old, err_msg=path.name)


@pytest.mark.shared_data
def test_real_radiographs_read_as_before(monkeypatch):
    require_shared("nih_sample/images")
    require_shared("dicom/chest_cr_monochrome1.dcm")
    files = _real_files()
    for path in files:
        new, old = io.load_cxr(path), reference_load_cxr(path, monkeypatch)
        assert type(new) is np.ndarray and new.shape == old.shape, path
        np.testing.assert_array_equal(new, old, err_msg=str(path))
