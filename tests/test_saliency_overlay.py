"""The saliency overlay stays within matplotlib's valid range: no "Clipping input data" warning per overlay."""

from __future__ import annotations

import logging

import numpy as np
from matplotlib import colormaps

from bundle.figures import _blend, saliency_overlay, save_figure


def test_overlay_of_a_white_image_is_not_clipped(tmp_path, caplog):
    rng = np.random.default_rng(0)
    image = np.ones((96, 80), dtype=np.float32)  # white where the map is strong: the NIH run's 1.0000000260
    image[:, :20] = rng.random((96, 20), dtype=np.float32)
    saliency = rng.random((32, 32), dtype=np.float32)
    # the former blend, (1 - alpha) * grey + alpha * colour with a float32 alpha, went above 1 on these inputs
    alpha = 0.5 * saliency[..., None]
    grey = np.repeat(np.ones((32, 32, 1), np.float32), 3, axis=2)
    assert ((1 - alpha) * grey + alpha * colormaps["jet"](saliency)[..., :3]).max() > 1.0

    blended = _blend(image[:32, :32], saliency)
    assert 0.0 <= blended.min() and blended.max() <= 1.0
    caplog.set_level(logging.WARNING)
    save_figure(saliency_overlay(image, saliency, "Cardiomegaly  p = 0.91"), tmp_path / "overlay.png")
    assert (tmp_path / "overlay.png").is_file()
    assert not [r for r in caplog.records if "Clipping input data" in r.getMessage()]
