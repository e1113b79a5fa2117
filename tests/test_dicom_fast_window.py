"""The float32 fast path of the DICOM window gives the general path's pixels, and is taken where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.data import io
from conftest import require_shared
from test_io import write_dicom

RAMP = np.arange(64 * 64).reshape(64, 64) % 4096

CASES = {
    "identity window": (RAMP, {"WindowCenter": 2048, "WindowWidth": 4096}),
    "narrow window": (RAMP, {"WindowCenter": 1000, "WindowWidth": 201}),
    "monochrome1": (RAMP, {"WindowCenter": 1500, "WindowWidth": 2500, "PhotometricInterpretation": "MONOCHROME1"}),
    "rescale": (RAMP % 1024, {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 0, "WindowWidth": 1001}),
    "signed": (RAMP - 2048, {"PixelRepresentation": 1, "WindowCenter": -100, "WindowWidth": 3000}),
    "several windows": (RAMP, {"WindowCenter": [1200, 2048], "WindowWidth": [800, 4096]}),
    "linear exact": (RAMP, {"WindowCenter": 1000, "WindowWidth": 300, "VOILUTFunction": "LINEAR_EXACT"}),
}
GENERAL_ONLY = {
    "sigmoid": (RAMP, {"WindowCenter": 2048, "WindowWidth": 1000, "VOILUTFunction": "SIGMOID"}),
    "width 1": (RAMP, {"WindowCenter": 2048, "WindowWidth": 1}),
    "negative slope": (RAMP, {"RescaleSlope": -1, "RescaleIntercept": 0, "WindowCenter": -2048, "WindowWidth": 4096}),
    "no window": (RAMP, {}),
}


def _both_paths(path, monkeypatch):
    """(fast, general, [fast path taken]): the loader as it is, and with both fast paths turned off.

    The fast paths: ``_native_window_float32`` (uncompressed unsigned data straight from its bytes) and, behind it,
    ``_linear_window_float32`` (pydicom's decoded pixels). The first must give the second's pixels exactly.
    """
    fast_calls = []
    originals = {name: getattr(io, name) for name in ("_native_window_float32", "_linear_window_float32")}

    def spy(name):
        def call(*args):
            result = originals[name](*args)
            fast_calls.append((name, result is not None))
            return result
        return call

    for name in originals:
        monkeypatch.setattr(io, name, spy(name))
    fast = io.load_cxr(path)
    monkeypatch.setattr(io, "_native_window_float32", lambda *args: None)
    decoded = io.load_cxr(path)  # pydicom's pixel_array, then the fused window
    np.testing.assert_array_equal(fast, decoded)
    monkeypatch.setattr(io, "_linear_window_float32", lambda *args: None)
    general = io.load_cxr(path)
    taken = [any(ok for _, ok in fast_calls[:2])]
    return fast, general, taken


@pytest.mark.parametrize("name", list(CASES))
def test_fast_window_equals_the_general_path(tmp_path, monkeypatch, name):
    pixels, elements = CASES[name]
    fast, general, taken = _both_paths(write_dicom(tmp_path / "x.dcm", pixels, **elements), monkeypatch)
    assert taken == [True]
    assert fast.dtype == general.dtype == np.float32 and fast.shape == general.shape
    np.testing.assert_allclose(fast, general, atol=2e-6, rtol=0)
    assert fast.min() >= 0.0 and fast.max() <= 1.0


@pytest.mark.parametrize("name", list(GENERAL_ONLY))
def test_other_windows_take_the_general_path(tmp_path, monkeypatch, name):
    pixels, elements = GENERAL_ONLY[name]
    fast, general, taken = _both_paths(write_dicom(tmp_path / "x.dcm", pixels, **elements), monkeypatch)
    assert taken == [False]
    np.testing.assert_array_equal(fast, general)


def test_native_path_masks_the_bits_above_bits_stored_as_pydicom_does(tmp_path, monkeypatch):
    """12 bits stored in 16 with garbage in the top 4 bits (overlay planes of old modalities): cleared by both."""
    path = write_dicom(tmp_path / "x.dcm", RAMP, WindowCenter=2048, WindowWidth=4096, BitsStored=12, HighBit=11)
    import pydicom

    ds = pydicom.dcmread(path)
    raw = np.frombuffer(ds.PixelData, "<u2").copy()
    raw[::3] |= 0xA000
    ds.PixelData = raw.tobytes()
    ds.save_as(path)
    fast, general, taken = _both_paths(path, monkeypatch)
    assert taken == [True]
    np.testing.assert_allclose(fast, general, atol=2e-6, rtol=0)
    np.testing.assert_allclose(fast, io.load_cxr(write_dicom(tmp_path / "clean.dcm", RAMP, WindowCenter=2048,
                                                             WindowWidth=4096, BitsStored=12, HighBit=11)))


def test_real_chest_cr_is_unchanged_by_the_fast_path(monkeypatch):
    fast, general, taken = _both_paths(require_shared("dicom/chest_cr_monochrome1.dcm"), monkeypatch)
    assert taken == [True]
    np.testing.assert_allclose(fast, general, atol=2e-6, rtol=0)
