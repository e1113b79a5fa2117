"""Tests for bundle.data.io: every format, every error, the DICOM pipeline and the MONAI transforms."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from conftest import require_shared
from bundle.data.errors import CXRDataError
from bundle.data.io import LoadCXR, LoadCXRd, array_to_cxr, load_cxr, read_dicom_header

REPO_ROOT = Path(__file__).resolve().parents[1]
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


CHEST_DICOM = "dicom/chest_cr_monochrome1.dcm"
CHEST_DICOM_J2K = "dicom/chest_cr_monochrome1_j2k.dcm"
TIBIA_DICOM_J2K = "dicom/tibia_cr_not_chest_j2k.dcm"


@pytest.fixture(scope="module")
def chest_dicom_image() -> np.ndarray:
    return load_cxr(require_shared(CHEST_DICOM))


# ----------------------------------------------------------------------------------------------
# helpers


def gradient_image(rows: int = 20, cols: int = 30) -> np.ndarray:
    """Asymmetric, all values distinct: a transposed or flipped load cannot match it."""
    return np.add.outer(np.arange(rows) * cols, np.arange(cols)).astype(np.float64)


def min_max(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min())


def write_dicom(path: Path, pixels: np.ndarray, **elements) -> Path:
    """A minimal valid CR DICOM file holding ``pixels`` (uint16, MONOCHROME2 unless overridden)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    colour = elements.get("SamplesPerPixel", 1) > 1
    ds.Rows, ds.Columns = pixels.shape[:2] if colour else pixels.shape[-2:]  # (H, W, 3) or ([frames,] H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # real-world values such as BodyPartExamined "chest"
        for keyword, value in elements.items():
            setattr(ds, keyword, value)
    ds.PixelData = (
        np.ascontiguousarray(pixels).astype(np.uint8 if ds.BitsAllocated == 8 else np.uint16).tobytes()
    )
    ds.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------------------
# real DICOM files


@pytest.mark.shared_data
def test_chest_dicom_monochrome1_is_inverted_and_in_unit_range(chest_dicom_image):
    image = chest_dicom_image
    assert image.dtype == np.float32
    assert image.shape == (1955, 1841)
    assert 0.0 <= image.min() and image.max() <= 1.0
    rows = slice(int(0.30 * 1955), int(0.70 * 1955))
    spine = image[rows, int(0.47 * 1841) : int(0.53 * 1841)].mean()
    right_lung = image[rows, int(0.25 * 1841) : int(0.35 * 1841)].mean()
    left_lung = image[rows, int(0.65 * 1841) : int(0.75 * 1841)].mean()
    # measured: spine 0.88, lungs 0.67 and 0.63; a missed MONOCHROME1 inversion gives the reverse
    assert spine > right_lung + 0.1
    assert spine > left_lung + 0.1


@pytest.mark.shared_data
def test_chest_dicom_uses_the_window_not_min_max(chest_dicom_image):
    # WindowCenter 15000 / WindowWidth 30000 over a 15-bit range: the image keeps its window
    # contrast (stored 874..26479 -> roughly 0.12..0.97), it is not stretched to 0..1.
    assert 0.05 < chest_dicom_image.min() < 0.2
    assert 0.9 < chest_dicom_image.max() < 1.0


@pytest.mark.shared_data
def test_jpeg2000_dicom_gives_the_same_pixels_as_uncompressed(chest_dicom_image):
    compressed = load_cxr(require_shared(CHEST_DICOM_J2K))
    np.testing.assert_array_equal(compressed, chest_dicom_image)


@pytest.mark.shared_data
def test_non_chest_dicom_is_refused_naming_body_part_and_file():
    path = require_shared(TIBIA_DICOM_J2K)
    with pytest.raises(CXRDataError, match="EXTREMITY") as info:
        load_cxr(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


@pytest.mark.shared_data
def test_non_chest_dicom_loads_with_warning_when_not_required():
    path = require_shared(TIBIA_DICOM_J2K)
    with pytest.warns(UserWarning, match="EXTREMITY"):
        image = load_cxr(path, require_chest=False)
    assert image.shape == (1760, 1760)
    assert image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


@pytest.mark.shared_data
def test_compressed_dicom_without_decoder_names_file_and_transfer_syntax(monkeypatch):
    path = require_shared(CHEST_DICOM_J2K)
    decoder = get_decoder(JPEG2000Lossless)
    # what pydicom sees when neither pylibjpeg, Pillow's openjpeg nor gdcm is installed
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(
        decoder,
        "_unavailable",
        {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"), "pillow": ("pillow", "numpy")},
    )
    with pytest.raises(CXRDataError) as info:
        load_cxr(path)
    message = str(info.value)
    assert str(path) in message
    assert "JPEG 2000 Image Compression (Lossless Only)" in message
    assert "pylibjpeg-openjpeg" in message
    # pydicom 3 signals a missing plugin with a RuntimeError; it is kept as the cause
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "missing dependencies" in str(info.value.__cause__)


@pytest.mark.shared_data
def test_dicom_without_pixel_data_is_refused(tmp_path):
    header = read_dicom_header(require_shared(CHEST_DICOM))
    assert "PixelData" not in header
    assert header.BodyPartExamined == "CHEST"
    path = tmp_path / "header_only.dcm"
    header.save_as(path, enforce_file_format=True)
    with pytest.raises(CXRDataError, match="no pixel data") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# synthetic DICOM: the pipeline step by step


def test_dicom_window_maps_the_window_range_to_unit_range(tmp_path):
    stored = np.arange(64 * 64).reshape(64, 64) % 4096
    path = write_dicom(tmp_path / "window.dcm", stored, WindowCenter=2048, WindowWidth=4096)
    # LINEAR window c=2048, w=4096 over a 12-bit output range is the identity: value / 4095
    np.testing.assert_allclose(load_cxr(path), stored / 4095, atol=1e-6)


def test_dicom_narrow_window_is_clipped(tmp_path):
    stored = np.tile(np.arange(0, 2000, 25), (32, 1))[:, :64]
    path = write_dicom(tmp_path / "narrow.dcm", stored, WindowCenter=1000, WindowWidth=201)
    image = load_cxr(path)
    assert image.min() == 0.0 and image.max() == 1.0
    # DICOM LINEAR window: c' = c - 0.5, w' = w - 1; x <= c' - w'/2 -> 0, x > c' + w'/2 -> 1
    np.testing.assert_array_equal(image[stored < 900], 0.0)
    np.testing.assert_array_equal(image[stored >= 1100], 1.0)
    assert np.all(np.diff(image[0]) >= 0)  # monotonic along the ramp


def test_dicom_without_window_is_min_max_scaled(tmp_path):
    stored = 100 + np.arange(40 * 25).reshape(40, 25)
    path = write_dicom(tmp_path / "plain.dcm", stored)
    np.testing.assert_allclose(load_cxr(path), min_max(stored), atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = 100 + np.arange(40 * 25).reshape(40, 25)
    path = write_dicom(tmp_path / "mono1.dcm", stored, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_allclose(load_cxr(path), 1.0 - min_max(stored), atol=1e-6)


def test_dicom_rescale_is_applied_before_the_window(tmp_path):
    stored = np.arange(32 * 32).reshape(32, 32)  # modality values 2 * stored - 1000: -1000..1046
    path = write_dicom(
        tmp_path / "rescale.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=0,
        WindowWidth=1001,
    )
    image = load_cxr(path)
    modality = 2.0 * stored - 1000
    np.testing.assert_array_equal(image[modality < -500], 0.0)
    np.testing.assert_array_equal(image[modality > 500], 1.0)
    middle = np.abs(modality) < 400
    assert 0.0 < image[middle].min() and image[middle].max() < 1.0
    assert abs(float(image[modality == 0][0]) - 0.5) < 0.01


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    stored = np.arange(32 * 32).reshape(32, 32) % 256
    lut_item = Dataset()
    lut_item.LUTDescriptor = [256, 0, 16]
    lut_item.LUTData = np.arange(255, -1, -1, dtype=np.uint16).tobytes()  # reversing LUT, output 0..255 (OW)
    path = write_dicom(tmp_path / "voilut.dcm", stored, BitsStored=8, HighBit=7, VOILUTSequence=[lut_item])
    np.testing.assert_allclose(load_cxr(path), (255 - stored) / 255, atol=1e-6)


def test_dicom_without_preamble_and_without_extension_are_detected(tmp_path, recwarn):
    stored = 100 + np.arange(40 * 25).reshape(40, 25)
    with_magic = write_dicom(tmp_path / "IM000001", stored)  # no extension: found by 'DICM' at byte 128
    np.testing.assert_allclose(load_cxr(with_magic), min_max(stored), atol=1e-6)

    bare = tmp_path / "bare.dcm"  # a data set with no preamble/file meta: found by extension
    ds = pydicom.dcmread(with_magic)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(load_cxr(bare), min_max(stored), atol=1e-6)


def test_dicom_multiframe_uses_first_frame_with_warning(tmp_path):
    frames = np.stack([np.arange(32 * 32).reshape(32, 32), np.zeros((32, 32))])
    path = write_dicom(tmp_path / "multi.dcm", frames, NumberOfFrames=2)
    with pytest.warns(UserWarning, match="multi-frame"):
        image = load_cxr(path)
    np.testing.assert_allclose(image, min_max(frames[0]), atol=1e-6)


def test_dicom_rgb_is_converted_to_grey(tmp_path):
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:] = (0, 0, 255)
    path = write_dicom(
        tmp_path / "rgb.dcm",
        rgb,
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
    )
    image = load_cxr(path)
    np.testing.assert_allclose(image[:, :16], 0.299, atol=1e-6)
    np.testing.assert_allclose(image[:, 16:], 0.114, atol=1e-6)


@pytest.mark.parametrize("body_part", ["CHEST", "chest", "Thorax", "CHEST_LUNG", "LUNG", "", "  "])
def test_chest_like_or_blank_body_part_is_accepted(tmp_path, body_part):
    path = write_dicom(tmp_path / "ok.dcm", np.arange(32 * 32).reshape(32, 32), BodyPartExamined=body_part)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_cxr(path).shape == (32, 32)


@pytest.mark.parametrize("body_part", ["ABDOMEN", "HAND", "SKULL"])
def test_other_body_parts_are_refused(tmp_path, body_part):
    path = write_dicom(tmp_path / "no.dcm", np.arange(32 * 32).reshape(32, 32), BodyPartExamined=body_part)
    with pytest.raises(CXRDataError, match=f"BodyPartExamined is '{body_part}'"):
        load_cxr(path)


@pytest.mark.parametrize("modality", ["CT", "MR", "US"])
def test_non_radiograph_modality_is_refused_or_warned(tmp_path, modality):
    path = write_dicom(tmp_path / "ct.dcm", np.arange(32 * 32).reshape(32, 32), Modality=modality)
    with pytest.raises(CXRDataError, match=f"Modality is '{modality}'") as info:
        load_cxr(path)
    assert str(path) in str(info.value)
    with pytest.warns(UserWarning, match=f"Modality is '{modality}'"):
        assert load_cxr(path, require_chest=False).shape == (32, 32)


@pytest.mark.parametrize("modality", ["CR", "DX", "DR", "RG", "OT"])
def test_radiograph_modalities_are_accepted(tmp_path, modality):
    path = write_dicom(tmp_path / "dx.dcm", np.arange(32 * 32).reshape(32, 32), Modality=modality)
    assert load_cxr(path).shape == (32, 32)


def test_garbage_with_dicom_extension_is_refused(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(np.random.default_rng(3).bytes(2000))
    with pytest.raises(CXRDataError, match="cannot decode image") as info:
        load_cxr(path)
    assert str(path) in str(info.value)
    with pytest.raises(CXRDataError, match="cannot decode image"):
        read_dicom_header(path)


def test_truncated_dicom_pixel_data_is_refused(tmp_path):
    path = write_dicom(tmp_path / "full.dcm", np.arange(64 * 64).reshape(64, 64))
    cut = tmp_path / "cut.dcm"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) - 3000])
    with pytest.raises(CXRDataError, match="cannot decode image") as info:
        load_cxr(cut)
    assert str(cut) in str(info.value)


# ----------------------------------------------------------------------------------------------
# Pillow formats


def test_png_8bit_is_divided_by_255(tmp_path):
    pixels = (np.arange(32 * 40) % 256).reshape(32, 40).astype(np.uint8)
    path = tmp_path / "eight.png"
    Image.fromarray(pixels).save(path)
    image = load_cxr(path)
    assert image.dtype == np.float32 and image.shape == (32, 40)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


def test_png_16bit_is_divided_by_65535(tmp_path):
    pixels = np.zeros((32, 40), dtype=np.uint16)
    pixels[0, 0] = 65535
    pixels[1, 1] = 32768
    pixels[2] = np.arange(40) * 1000
    path = tmp_path / "sixteen.png"
    Image.fromarray(pixels).save(path)
    image = load_cxr(path)
    assert image[0, 0] == 1.0
    assert image[5, 5] == 0.0
    np.testing.assert_allclose(image, pixels / 65535.0, atol=1e-7)


def test_rgb_and_rgba_png_become_luminance(tmp_path):
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:32] = (0, 255, 0)
    rgb[:, 32:] = (0, 0, 255)
    expected = np.zeros((32, 48))
    expected[:, :16], expected[:, 16:32], expected[:, 32:] = 0.299, 0.587, 0.114
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(load_cxr(tmp_path / "rgb.png"), expected, atol=1e-6)
    rgba = np.concatenate([rgb, np.full((32, 48, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(load_cxr(tmp_path / "rgba.png"), expected, atol=1e-6)


def test_grey_jpeg_is_close_to_its_source(tmp_path):
    pixels = np.add.outer(np.arange(64) * 2, np.arange(96)).astype(np.uint8)  # smooth, asymmetric
    path = tmp_path / "gradient.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    image = load_cxr(path)
    assert image.shape == (64, 96)
    np.testing.assert_allclose(image, pixels / 255.0, atol=0.03)


@pytest.mark.parametrize("suffix", [".bmp", ".tif"])
def test_bmp_and_tiff(tmp_path, suffix):
    pixels = (np.arange(32 * 40) % 256).reshape(32, 40).astype(np.uint8)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).save(path)
    np.testing.assert_allclose(load_cxr(path), pixels / 255.0, atol=1e-7)


def test_signature_wins_over_extension(tmp_path):
    pixels = (np.arange(32 * 40) % 256).reshape(32, 40).astype(np.uint8)
    path = tmp_path / "really_a_png.xyz"
    Image.fromarray(pixels).save(path, format="PNG")
    np.testing.assert_allclose(load_cxr(path), pixels / 255.0, atol=1e-7)


@pytest.mark.parametrize("suffix, save_kwargs", [(".png", {}), (".jpg", {"quality": 95})])
def test_truncated_image_is_refused(tmp_path, suffix, save_kwargs):
    rng = np.random.default_rng(0)
    path = tmp_path / f"truncated{suffix}"
    Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(path, **save_kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CXRDataError, match="cannot decode image: .*truncated") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_png_extension_with_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(np.random.default_rng(1).bytes(1000))
    with pytest.raises(CXRDataError, match="cannot decode image") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# file-level errors


def test_missing_path_is_refused(tmp_path):
    path = tmp_path / "nowhere.png"
    with pytest.raises(CXRDataError, match="does not exist") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(CXRDataError, match=r"empty file \(0 bytes\)") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "mystery.xyz"
    path.write_bytes(np.random.default_rng(2).bytes(500))
    with pytest.raises(CXRDataError, match="unknown image format") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_too_small_image_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(CXRDataError, match="image is 8x8, smaller than the minimum"):
        load_cxr(tmp_path / "tiny.png")
    # width x height, not rows x columns
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 40), dtype=np.uint8)).save(tmp_path / "strip.png")
    with pytest.raises(CXRDataError, match="image is 40x10"):
        load_cxr(tmp_path / "strip.png")
    assert load_cxr(tmp_path / "strip.png", min_size=10).shape == (10, 40)


def test_directory_is_refused(tmp_path):
    with pytest.raises(CXRDataError, match="directory"):
        load_cxr(tmp_path)


# ----------------------------------------------------------------------------------------------
# NIfTI and ITK formats


@pytest.mark.parametrize("add_slice_axis", [False, True])
def test_nifti_round_trip_keeps_orientation(tmp_path, add_slice_axis):
    image = gradient_image()  # (rows 20, cols 30)
    voxels = image.T[..., None] if add_slice_axis else image.T  # the documented convention
    path = tmp_path / "gradient.nii.gz"
    nib.save(nib.Nifti1Image(voxels.astype(np.float32), np.eye(4)), path)
    loaded = load_cxr(path)
    assert loaded.shape == (20, 30)
    np.testing.assert_allclose(loaded, min_max(image), atol=1e-6)


def test_nifti_constant_image_is_refused(tmp_path):
    path = tmp_path / "constant.nii"
    nib.save(nib.Nifti1Image(np.full((30, 20), 7.0, np.float32), np.eye(4)), path)
    with pytest.raises(CXRDataError, match="constant image") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_nifti_nan_is_refused(tmp_path):
    voxels = gradient_image().T.astype(np.float32)
    voxels[3, 4] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), path)
    with pytest.raises(CXRDataError, match="NaN") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_nifti_volume_is_refused(tmp_path):
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 20, 5), np.float32), np.eye(4)), path)
    with pytest.raises(CXRDataError, match="expected 2-D"):
        load_cxr(path)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_itk_written_files_round_trip(tmp_path, suffix):
    itk = pytest.importorskip("itk")
    image = gradient_image()
    path = tmp_path / f"gradient{suffix}"
    itk.imwrite(itk.image_from_array(image.astype(np.float32)), str(path))
    loaded = load_cxr(path)
    assert loaded.shape == (20, 30)
    # .nii.gz here also checks that the NIfTI convention matches what ITK writes
    np.testing.assert_allclose(loaded, min_max(image), atol=1e-6)


def test_corrupt_mha_is_refused(tmp_path):
    path = tmp_path / "corrupt.mha"
    path.write_bytes(b"not an image" * 10)
    with pytest.raises(CXRDataError, match="cannot decode image") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# in-memory arrays and MONAI transforms


def test_load_cxrd_on_a_path_gives_metatensor_with_filename(tmp_path):
    pixels = (np.arange(32 * 40) % 256).reshape(32, 40).astype(np.uint8)
    path = tmp_path / "eight.png"
    Image.fromarray(pixels).save(path)
    record = {"image": str(path), "label": [1.0, 0.0]}
    out = LoadCXRd(keys="image")(record)
    image = out["image"]
    assert isinstance(image, MetaTensor)
    assert image.shape == (1, 32, 40) and image.dtype == torch.float32
    assert image.meta["filename_or_obj"] == str(path)
    np.testing.assert_allclose(image[0].numpy(), pixels / 255.0, atol=1e-7)
    assert out["label"] == [1.0, 0.0]
    assert record["image"] == str(path)  # input record untouched


def test_load_cxrd_on_a_uint8_array(tmp_path):
    pixels = (np.arange(28 * 28) % 256).reshape(28, 28).astype(np.uint8)
    image = LoadCXRd()({"image": pixels})["image"]
    assert isinstance(image, torch.Tensor)
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    np.testing.assert_allclose(image[0].numpy(), pixels / 255.0, atol=1e-7)


@pytest.mark.shared_data
def test_load_cxrd_on_real_medmnist_entries():
    data = np.load(require_shared("pneumoniamnist/pneumoniamnist.npz"))
    pixels = data["train_images"][:3]
    transform = LoadCXRd()
    for entry in pixels:
        image = transform({"image": entry})["image"]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32
        np.testing.assert_allclose(image[0].numpy(), entry / 255.0, atol=1e-7)


@pytest.mark.shared_data
def test_real_nih_png_loads():
    path = require_shared("nih_sample/images/00000001_000.png")
    image = load_cxr(path)
    assert image.shape == (1024, 1024)
    np.testing.assert_allclose(image, np.asarray(Image.open(path).convert("L")) / 255.0, atol=1e-7)


def test_load_cxrd_missing_key():
    with pytest.raises(KeyError):
        LoadCXRd()({"label": 1})
    assert LoadCXRd(allow_missing_keys=True)({"label": 1}) == {"label": 1}


def _with_black_pixel(array):
    array[..., 0, 0] = 0  # (the other pixels carry the value under test; a constant image is refused)
    return array


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((20, 20), 65535, np.uint16), 1.0),
        (np.full((20, 20), 255, np.uint8), 1.0),
        (np.full((1, 20, 20), 0.25, np.float32), 0.25),
        (np.full((20, 20, 1), 1.5, np.float64)[..., 0], 1.0),  # floats are clipped to [0, 1]
        (torch.full((20, 20), 51, dtype=torch.uint8), 0.2),
        (np.full((20, 20), True), 1.0),
    ],
)
def test_arrays_pass_through_with_scaling(array, expected):
    image = LoadCXR()(_with_black_pixel(array))
    assert image.shape == (1, 20, 20) and image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy()[0, 1:, 1:], expected, atol=1e-7)
    assert image[0, 0, 0] == 0.0


def test_array_colour_and_errors():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[1:, :, 1] = 255
    np.testing.assert_allclose(array_to_cxr(rgb)[1:], 0.587, atol=1e-6)
    with pytest.raises(CXRDataError, match="NaN"):
        array_to_cxr(np.full((20, 20), np.nan))
    with pytest.raises(CXRDataError, match="shape"):
        array_to_cxr(np.zeros((2, 20, 20, 2)))
    with pytest.raises(CXRDataError, match="image is 10x10"):
        LoadCXR()(np.zeros((10, 10), np.uint8))


@pytest.mark.shared_data
def test_load_cxr_transform_on_real_dicom_path_with_require_chest_false(tmp_path):
    path = tmp_path / "tibia.dcm"
    shutil.copy(require_shared(TIBIA_DICOM_J2K), path)
    with pytest.raises(CXRDataError, match="EXTREMITY"):
        LoadCXR()(path)
    with pytest.warns(UserWarning, match="EXTREMITY"):
        image = LoadCXR(require_chest=False)(path)
    assert image.shape == (1, 1760, 1760)
    assert image.meta["filename_or_obj"] == str(path)


# ----------------------------------------------------------------------------------------------
# images that would load to the wrong picture: partial-range integers, no contrast, a header that lies


def _png16(path: Path, values: np.ndarray, sbit: int | None = None) -> Path:
    """A 16-bit greyscale PNG of ``values``, with an ``sBIT`` chunk of ``sbit`` bits right after IHDR."""
    import struct
    import zlib

    Image.fromarray(values.astype(np.uint16)).save(path)
    if sbit is not None:
        data = path.read_bytes()
        chunk = struct.pack(">I", 1) + b"sBIT" + bytes([sbit])
        chunk += struct.pack(">I", zlib.crc32(b"sBIT" + bytes([sbit])) & 0xFFFFFFFF)
        path.write_bytes(data[:33] + chunk + data[33:])  # signature (8) + IHDR chunk (25)
    return path


def _detector_image(bits: int, rows: int = 24, cols: int = 32) -> np.ndarray:
    """Values over most of a ``bits``-bit range (0 .. 2**bits - 1), as a detector writes them."""
    return np.linspace(0, 2**bits - 1, rows * cols).round().reshape(rows, cols)


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_16_bit_png_with_sbit_is_scaled_by_its_significant_bits(tmp_path, bits):
    values = _detector_image(bits)
    path = _png16(tmp_path / f"sbit{bits}.png", values, sbit=bits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file says its depth: no warning
        image = load_cxr(path)
    np.testing.assert_allclose(image, values / (2**bits - 1), atol=1e-6)
    assert image.max() == 1.0


def test_16_bit_png_with_sbit_and_samples_scaled_up_uses_the_container(tmp_path):
    """The PNG standard's way: 12-bit samples shifted into the 16-bit range, sBIT 12: already full range."""
    values = _detector_image(12) * 16
    image = load_cxr(_png16(tmp_path / "scaled.png", values, sbit=12))
    np.testing.assert_allclose(image, values / 65535, atol=1e-6)


@pytest.mark.parametrize("bits, writer", [(12, "png"), (10, "png"), (14, "png"), (12, "tif")])
def test_partial_range_16_bit_image_without_sbit_is_scaled_by_rule_with_a_warning(tmp_path, bits, writer):
    values = (_detector_image(bits)[:, ::-1] * 0.9).round()  # not reaching the top of its range either
    path = tmp_path / f"partial{bits}.{writer}"
    if writer == "png":
        _png16(path, values)
    else:
        Image.fromarray(values.astype(np.uint16)).save(path)
    from bundle.data.io import PartialRangeWarning

    with pytest.warns(PartialRangeWarning, match=f"{path}.*read as {bits}-bit data"):
        image = load_cxr(path)
    np.testing.assert_allclose(image, values / (2**bits - 1), atol=1e-6)
    assert image.max() > 0.85  # not ~6% of the range


def test_full_range_16_bit_png_is_unchanged_and_not_warned(tmp_path):
    values = _detector_image(16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_cxr(_png16(tmp_path / "full.png", values))
    np.testing.assert_allclose(image, values / 65535, atol=1e-6)


def test_partial_range_uint16_array_follows_the_same_rule():
    from bundle.data.io import PartialRangeWarning

    values = _detector_image(12).astype(np.uint16)
    with pytest.warns(PartialRangeWarning, match="in-memory array"):
        image = array_to_cxr(values)
    np.testing.assert_allclose(image, values / 4095, atol=1e-6)


def test_partial_range_16_bit_colour_png_is_refused(tmp_path):
    import struct
    import zlib

    rows, cols = 20, 30
    rgb = np.repeat(_detector_image(12, rows, cols)[..., None], 3, axis=2).astype(">u2")
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "colour16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with pytest.raises(CXRDataError, match="16-bit colour PNG whose values use only part") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name, array", [
    ("black.png", np.zeros((32, 32), np.uint8)),
    ("white.png", np.full((32, 32), 255, np.uint8)),
    ("grey16.png", np.full((32, 32), 30000, np.uint16)),
    ("grey.jpg", np.full((32, 32), 128, np.uint8)),
    ("grey.tif", np.full((32, 32), 700, np.uint16)),
])
def test_constant_images_are_refused_by_name(tmp_path, name, array):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    with pytest.raises(CXRDataError, match="constant image") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_image_with_less_than_one_grey_level_of_contrast_is_refused(tmp_path):
    values = np.full((32, 32), 40000, np.uint16)
    values[::2] += 100  # 100 / 65535: less than 1/255
    with pytest.raises(CXRDataError, match="constant image: values span only"):
        load_cxr(_png16(tmp_path / "flat.png", values))


@pytest.mark.parametrize("elements", [
    {"RescaleSlope": 0, "RescaleIntercept": -1024},  # every pixel -1024
    {"WindowCenter": 60000, "WindowWidth": 10},  # every pixel below the window: all black
])
def test_dicom_that_becomes_one_value_is_refused(tmp_path, elements):
    path = write_dicom(tmp_path / "flat.dcm", gradient_image(32, 32).astype(np.uint16), **elements)
    with pytest.raises(CXRDataError, match="constant image") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("rows, columns, frames", [(32, 30, None), (30, 32, None), (16, 32, None), (32, 32, 2)])
def test_dicom_whose_pixel_data_length_disagrees_with_its_header_is_refused(tmp_path, rows, columns, frames):
    """Written for 32 x 32 pixels, one frame; the header says otherwise: no sheared image, a named refusal."""
    path = write_dicom(tmp_path / "liar.dcm", gradient_image(32, 32).astype(np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, columns
    if frames:
        ds.NumberOfFrames = frames
    ds.save_as(path)
    with pytest.raises(CXRDataError, match="pixel data is 2048 bytes, but Rows x Columns") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


def test_dicom_pixel_data_with_one_padding_byte_loads(tmp_path):
    pixels = (gradient_image(17, 17) % 256).astype(np.uint8)
    path = write_dicom(tmp_path / "odd.dcm", pixels, BitsAllocated=8, BitsStored=8, HighBit=7)
    assert len(pydicom.dcmread(path).PixelData) == 290  # 289 + 1 padding byte
    np.testing.assert_allclose(load_cxr(path), min_max(pixels.astype(float)), atol=1e-6)


def test_bare_dicom_without_preamble_or_extension_is_read(tmp_path):
    pixels = gradient_image(32, 32).astype(np.uint16)
    source = write_dicom(tmp_path / "with_preamble.dcm", pixels)
    ds = pydicom.dcmread(source)
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "IM0002"  # no extension, no 'DICM': the data set alone, as old archives write it
    ds.save_as(bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(load_cxr(bare), min_max(pixels.astype(float)), atol=1e-6)


def test_formats_the_loader_does_not_read_are_refused_by_name(tmp_path):
    path = tmp_path / "scan"
    Image.fromarray(gradient_image(32, 32).astype(np.uint8)).save(path, format="GIF")
    with pytest.raises(CXRDataError, match="GIF file, a format the loader does not read") as info:
        load_cxr(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# what a path is, when it is not an image file: described, never opened


def _special_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import socket

    entries = {}
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    entries["fifo"] = (fifo, "is a named pipe (FIFO), not an image file")
    sock_path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.close()
    entries["socket"] = (sock_path, "is a socket, not an image file")
    entries["device"] = (Path("/dev/null"), "is a character device, not an image file")
    (tmp_path / "folder.png").mkdir()
    entries["directory"] = (tmp_path / "folder.png", "is a directory, not an image file")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    entries["dangling"] = (tmp_path / "dangling.png", f"dangling symbolic link (to '{tmp_path / 'gone.png'}'")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    entries["loop"] = (tmp_path / "loop.png", "symbolic link loop")
    entries["missing"] = (tmp_path / "missing.png", "file does not exist")
    return entries


def test_paths_that_are_not_image_files_are_described_and_never_opened(tmp_path):
    import threading

    from bundle.data.io import path_problem

    for kind, (path, problem) in _special_files(tmp_path).items():
        assert problem in path_problem(path), kind
        outcome = []

        def load(path=path):
            try:
                load_cxr(path)
            except CXRDataError as error:
                outcome.append(str(error))

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(10)  # a FIFO opened for reading would block here for ever
        assert not worker.is_alive(), f"load_cxr blocked on a {kind}"
        assert outcome and str(path) in outcome[0] and problem in outcome[0], (kind, outcome)


# ----------------------------------------------------------------------------------------------
# images that were already met well: kept so, as docs/inputs.md says


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    upright = np.zeros((40, 24), np.uint8)
    upright[:10] = 255  # bright band at the top of the upright picture
    stored = np.ascontiguousarray(np.rot90(upright, k=-1))  # what the sensor wrote: turned 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 8  # EXIF orientation 8: turn 90 degrees counter-clockwise to view
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    image = load_cxr(tmp_path / "phone.jpg")
    assert image.shape == (40, 24) and image[:10].mean() > 0.9 and image[12:].mean() < 0.1


@pytest.mark.parametrize("mode", ["P", "CMYK"])
def test_palette_and_cmyk_images_become_luminance(tmp_path, mode):
    grey = (gradient_image(24, 32) % 256).astype(np.uint8)
    source = Image.fromarray(grey).convert("RGB").convert(mode)
    path = tmp_path / ("palette.png" if mode == "P" else "cmyk.tif")
    source.save(path)
    np.testing.assert_allclose(load_cxr(path), np.asarray(source.convert("L"), np.float64) / 255, atol=2 / 255)


def test_multi_frame_tiff_uses_the_first_frame_with_a_warning(tmp_path):
    first = (gradient_image(24, 32) % 256).astype(np.uint8)
    frames = [Image.fromarray(first), Image.fromarray(np.zeros((24, 32), np.uint8))]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="2 frames, using the first"):
        image = load_cxr(tmp_path / "stack.tif")
    np.testing.assert_allclose(image, first / 255, atol=1e-6)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((200, 200), np.uint8) + np.arange(200, dtype=np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 pixels: over twice the limit, an error
    with pytest.raises(CXRDataError, match="DecompressionBombError") as info:
        load_cxr(tmp_path / "bomb.png")
    assert str(tmp_path / "bomb.png") in str(info.value)


def test_dicom_with_a_negative_rescale_slope_is_not_black(tmp_path):
    """pydicom's VOI output range falls when RescaleSlope < 0: once every pixel came out 0 (all black)."""
    stored = np.arange(64 * 64).reshape(64, 64) % 4096
    path = write_dicom(tmp_path / "negative.dcm", stored, RescaleSlope=-1, RescaleIntercept=0, WindowCenter=-2048,
                       WindowWidth=4096)
    image = load_cxr(path)
    # modality value -stored; the window spans it all: the highest modality value (stored 0) is white
    np.testing.assert_allclose(image, 1.0 - stored / 4095, atol=1e-3)
