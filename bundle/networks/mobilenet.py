"""The compact real-time student: MobileNetV3-Large, built from PyTorch layers.

Termritthikun et al. distill a DenseNet161 teacher into EEEA-Net-C2 (4.7M parameters,
0.3 G multiply-adds at 224 px), a network found by an evolutionary architecture search
whose cells are MobileNet-style inverted residuals. EEEA-Net-C2 is in no library (its
genotype and code are the authors'), so the bundle's compact student is the closest
hand-designed network of the same family that we can write out in full:
MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", ICCV 2019, Table 1),
itself the result of an architecture search over the same kind of blocks (inverted
residuals with depthwise convolutions, squeeze-and-excitation, h-swish).

Budget (``docs/architecture.md`` has the full argument): at most 5M parameters and
0.35 GFLOPs at 224 px, FLOPs counted by PyTorch's ``FlopCounterMode`` (2 per
multiply-add; the strict reading of the issue). MobileNetV3-Large at width 1.0 needs
0.43 GFLOPs by that count, EfficientNet-B0 0.75; the published width-0.75 variant
(``width_mult=0.75``, the default here) needs 0.31 GFLOPs with 2.7M parameters for 14
classes. As in the reference implementation's "fine-grain classification" mode, the
width multiplier scales the stem and the blocks, not the last two layers (960 and
1280 channels), which carry most of the parameters at almost no compute.

Choices the paper tables leave open:

* batch norm with PyTorch's momentum 0.1 (not TensorFlow's 0.01 decay), eps 1e-3,
  for the reason given in :class:`~bundle.networks.EfficientNetEnsemble`: short
  runs from scratch;
* one input channel (radiographs), any input size (global average pooling; the
  feature maps sit at 1/2, 1/4, 1/8, 1/16, 1/32 of the input).

Module names, for feature hooks and Grad-CAM (sizes at 224 px, width 0.75):
``stem`` (16 x 112 x 112), ``stage1`` (16 x 112), ``stage2`` (24 x 56 x 56),
``stage3`` (32 x 28 x 28), ``stage4`` (88 x 14 x 14), ``stage5`` (120 x 7 x 7),
``head`` (960 x 7 x 7, the Grad-CAM layer), ``classifier``. ``stage2``..``stage4``
line up in size with DenseNet's ``features.denseblock1``..``denseblock3``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileNetV3", "MOBILENET_V3_LARGE"]

# Howard et al. 2019, Table 1 (MobileNetV3-Large): kernel, expansion size, output channels,
# squeeze-and-excitation, activation ("RE" ReLU, "HS" h-swish), stride; grouped into the
# stages that end at each output stride (1/2, 1/4, 1/8, 1/16, 1/32).
MOBILENET_V3_LARGE: tuple[tuple[tuple[int, int, int, bool, str, int], ...], ...] = (
    ((3, 16, 16, False, "RE", 1),),
    ((3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1)),
    ((5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1)),
    ((3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
     (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1)),
    ((5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% down (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _activation(name: str) -> nn.Module:
    return nn.Hardswish(inplace=True) if name == "HS" else nn.ReLU(inplace=True)


def _conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             activation: str | None = None) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.1)),
    ]
    if activation is not None:
        layers.append(("act", _activation(activation)))
    return nn.Sequential(OrderedDict(layers))


class SqueezeExcitation(nn.Module):
    """Channel gate: global pool, 1x1 conv down to ``squeeze``, ReLU, 1x1 conv up, hard sigmoid."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion, depthwise k x k, optional SE, linear 1x1 projection, residual."""

    def __init__(self, in_channels: int, kernel: int, expanded: int, out_channels: int, se: bool, activation: str,
                 stride: int) -> None:
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        layers: list[tuple[str, nn.Module]] = []
        if expanded != in_channels:
            layers.append(("expand", _conv_bn(in_channels, expanded, 1, activation=activation)))
        layers.append(("depthwise", _conv_bn(expanded, expanded, kernel, stride, groups=expanded,
                                             activation=activation)))
        if se:
            layers.append(("se", SqueezeExcitation(expanded, _divisible(expanded // 4))))
        layers.append(("project", _conv_bn(expanded, out_channels, 1)))
        self.block = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    """MobileNetV3-Large for one-channel images (the compact student; see the module docstring).

    Args:
        in_channels: image channels (1 for radiographs).
        out_channels: number of classes (logits).
        width_mult: width multiplier of the stem and the blocks (0.75: 2.7M parameters and
            0.31 GFLOPs at 224 px for 14 classes; 1.0: 4.2M and 0.43 GFLOPs).
        head_channels: the last 1x1 convolution's width (960 in the paper, not scaled).
        hidden_channels: the width of the hidden linear layer of the classifier (1280, not scaled).
        dropout: dropout before the last linear layer.
        config: the block table, as :data:`MOBILENET_V3_LARGE` (stages of
            ``(kernel, expanded, out, se, activation, stride)``).

    Example::

        >>> net = MobileNetV3(in_channels=1, out_channels=14)
        >>> net(torch.zeros(2, 1, 224, 224)).shape
        torch.Size([2, 14])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width_mult: float = 0.75,
                 head_channels: int = 960, hidden_channels: int = 1280, dropout: float = 0.2,
                 config: Sequence[Sequence[Sequence]] = MOBILENET_V3_LARGE) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if not 1 <= len(config) <= 5:
            raise ValueError(f"config has {len(config)} stages; MobileNetV3 has 1 to 5 (one per output stride)")
        stem = _divisible(16 * width_mult)
        self.stem = _conv_bn(in_channels, stem, 3, stride=2, activation="HS")
        previous = stem
        for index, stage in enumerate(config, start=1):
            blocks = []
            for kernel, expanded, out, se, activation, stride in stage:
                out = _divisible(out * width_mult)
                blocks.append(InvertedResidual(previous, int(kernel), _divisible(expanded * width_mult), out,
                                               bool(se), str(activation), int(stride)))
                previous = out
            self.add_module(f"stage{index}", nn.Sequential(*blocks))
        self.num_stages = len(config)
        self.head = _conv_bn(previous, head_channels, 1, activation="HS")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(head_channels, hidden_channels)),
            ("act", nn.Hardswish(inplace=True)),
            ("dropout", nn.Dropout(dropout)),
            ("fc2", nn.Linear(hidden_channels, out_channels)),
        ]))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def saliency_tail(self, layer: str) -> nn.Module | None:
        """The network after ``layer`` as a module (``head`` -> pooling -> classifier), sharing its weights; None
        for any other layer. ONNX Runtime gives the ``head`` activations, and Grad-CAM's gradient is taken through
        this tail alone (:mod:`bundle.runtime`)."""
        if layer != "head":
            return None
        return nn.Sequential(self.pool, nn.Flatten(1), self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        # written out (hasattr is decided when TorchScript compiles): scripting takes no getattr of a computed name
        if hasattr(self, "stage1"):
            x = self.stage1(x)
        if hasattr(self, "stage2"):
            x = self.stage2(x)
        if hasattr(self, "stage3"):
            x = self.stage3(x)
        if hasattr(self, "stage4"):
            x = self.stage4(x)
        if hasattr(self, "stage5"):
            x = self.stage5(x)
        x = self.head(x)
        return self.classifier(torch.flatten(self.pool(x), 1))
