"""Pre-training check that a network accepts the configured image size.

Some networks cannot take small images: MONAI's EfficientNet-B0 fails at 28 px (a
5x5 kernel meets a 4x4 map), a ViT needs a size divisible by its patch. Without a
check the run fails at the first batch, after the data has been read and cached,
with PyTorch's message and no word of the setting to change. ``check_input_size``
runs one forward pass on zeros in ``initialize`` and turns any failure into an error
that names the stage, the network, the size and the smallest size that works.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_input_size"]


def _accepts(network: nn.Module, shape: tuple[int, ...], device: torch.device) -> Exception | None:
    try:
        network(torch.zeros(shape, device=device))
    except Exception as error:  # any failure means: not this size
        return error
    return None


@torch.no_grad()
def check_input_size(network: nn.Module, image_size: int, stage: str = "network", in_channels: int = 1,
                     candidates: tuple[int, ...] = (16, 24, 28, 32, 48, 56, 64, 96, 112, 128, 224)) -> nn.Module:
    """Return ``network`` if it accepts ``(2, in_channels, image_size, image_size)``; else raise ValueError.

    Train/eval flags are restored and no batch-norm statistics move (eval mode, no_grad).
    """
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    modes = {module: module.training for module in network.modules()}
    network.eval()
    try:
        error = _accepts(network, (2, in_channels, int(image_size), int(image_size)), device)
        if error is None:
            return network
        working = next((s for s in candidates if s > image_size
                        and _accepts(network, (2, in_channels, s, s), device) is None), None)
        hint = f"; the smallest size that works among {list(candidates)} is {working} px" if working else ""
        raise ValueError(
            f"the {stage} network ({type(network).__name__}) cannot take image_size {image_size} px{hint}. "
            f"Set --image_size accordingly. ({type(error).__name__}: {error})"
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training
