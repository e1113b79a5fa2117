"""DenseNet161, the compact-student path's teacher (Termritthikun et al.).

MONAI has ``DenseNet121/169/201/264`` but no ``DenseNet161``, which differs from
them in its numbers only: 96 initial features, growth rate 48, blocks of 6, 12, 36 and
24 layers (Huang et al., "Densely connected convolutional networks", CVPR 2017, and
torchvision's ``densenet161``). So it is MONAI's ``DenseNet`` with those numbers:
26.5M parameters and 15.2 GFLOPs (7.6 G multiply-adds) at 224 px for 14 classes.
Feature hooks and Grad-CAM use MONAI's names: ``features.denseblock1`` ...
``features.denseblock4`` (at 224 px: 384 x 56 x 56, 768 x 28 x 28, 2112 x 14 x 14,
2208 x 7 x 7).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import DenseNet

__all__ = ["DenseNet161"]


class DenseNet161(DenseNet):
    """MONAI ``DenseNet`` with DenseNet-161's configuration, trained from scratch (no weights are downloaded)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, init_features: int = 96,
                 growth_rate: int = 48, block_config: Sequence[int] = (6, 12, 36, 24), **kwargs) -> None:
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                         init_features=init_features, growth_rate=growth_rate, block_config=block_config, **kwargs)
