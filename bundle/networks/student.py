"""The seed paper's student: three convolutional blocks and a linear head.

Bandyopadhyay et al., "A distillation based approach for the diagnosis of
diseases", section 3.3: "3 consecutive convolutional layers. The primary
convolutional layer makes use of 64 filters and has a kernel size of 5x5. The
next two layers of the student contain 3x3 kernels with 64 and 128 filters
respectively ... Classification from the feature space is done with the help of
linear layers."

What the paper leaves open, and what we chose:

* each convolution is followed by batch norm, ReLU and 2x2 max pooling, so that
  the three feature maps sit at 1/2, 1/4 and 1/8 of the input, the scales at
  which the Wasserstein feature loss compares them with the assistant's;
* the first convolution has stride 2 (a 5x5 kernel at full resolution on 224 px
  images would cost most of the network's FLOPs for little gain);
* global average pooling before the linear head, so one network takes any input
  size (28 px MedMNIST to 256 px phantoms) without changing its parameters.

The blocks are named ``conv1``, ``conv2``, ``conv3`` so that feature hooks can be
placed on them by name from the config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ThreeConvStudent"]


class ThreeConvStudent(nn.Module):
    """Three conv blocks (64 x 5x5, 64 x 3x3, 128 x 3x3) and a linear classifier.

    Args:
        in_channels: image channels (1 for radiographs).
        out_channels: number of classes (logits, no activation).
        channels: filters of the three blocks.
        kernel_sizes: kernel sizes of the three blocks.
        first_stride: stride of the first convolution.
        dropout: dropout before the linear head.

    Example::

        >>> net = ThreeConvStudent(in_channels=1, out_channels=5)
        >>> net(torch.zeros(2, 1, 128, 128)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (64, 64, 128),
        kernel_sizes: Sequence[int] = (5, 3, 3),
        first_stride: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(channels) != 3 or len(kernel_sizes) != 3:
            raise ValueError(f"the student has exactly three conv blocks, got channels={channels}, kernels={kernel_sizes}")
        blocks = []
        previous = in_channels
        for index, (width, kernel) in enumerate(zip(channels, kernel_sizes)):
            stride = first_stride if index == 0 else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, kernel, stride=stride, padding=kernel // 2, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            previous = width
        self.conv1, self.conv2, self.conv3 = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(previous, out_channels)

    def saliency_tail(self, layer: str) -> nn.Module | None:
        """The network after ``layer`` as a module (``conv3`` -> pooling -> dropout -> linear), sharing its weights;
        None for any other layer (see :meth:`bundle.networks.MobileNetV3.saliency_tail`)."""
        if layer != "conv3":
            return None
        return nn.Sequential(self.pool, nn.Flatten(1), self.dropout, self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))
