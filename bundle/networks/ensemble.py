"""The teacher: an ensemble of networks whose logits are averaged.

Bandyopadhyay et al. use an EfficientNet-B6 + B7 ensemble; here the members are
MONAI ``EfficientNetBN`` models named in the config, so the paper's teacher is
``--teacher_members "['efficientnet-b6', 'efficientnet-b7']"`` and the CPU-sized
default is B0 + B1. Members are ``members.0``, ``members.1`` ..., so feature hooks
name e.g. ``members.0._blocks.2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import EfficientNetBN
from torch import nn

__all__ = ["EnsembleNetwork", "EfficientNetEnsemble"]


class EnsembleNetwork(nn.Module):
    """Mean of the members' logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


class EfficientNetEnsemble(EnsembleNetwork):
    """Ensemble of MONAI EfficientNets, trained from scratch (no weights are downloaded).

    BatchNorm momentum: MONAI's EfficientNet keeps TensorFlow's running-average decay
    of 0.99 (PyTorch momentum 0.01), tuned for hundreds of thousands of iterations. In
    runs of a few hundred iterations the running statistics lag far behind the weights,
    and the network in eval mode predicts one class for everything (measured on
    PneumoniaMNIST at 32 px after 3 epochs: validation accuracy 0.74, every image
    "pneumonia", against 0.93 with momentum 0.1). So the default here is PyTorch's 0.1.

    Classifier head: zero-initialised. MONAI's EfficientNet draws the final linear layer
    from U(-1/sqrt(num_classes), +1/sqrt(num_classes)), about +-0.7 for two classes over
    1,280 features, so the first logits are large and the first Adam steps blow the
    loss up (PneumoniaMNIST, B0, 32 px, 80 steps: mean loss 5.25 in the first quarter and
    1.31 in the last, against 0.47 and 0.22 with a zero head). A zero head starts every
    member at the uniform prediction (loss ln K), as from-scratch recipes do.

    Args:
        model_names: e.g. ``["efficientnet-b0", "efficientnet-b1"]`` (paper: b6 and b7).
        in_channels: image channels.
        out_channels: classes.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention).
    """

    def __init__(self, model_names: Sequence[str] = ("efficientnet-b0", "efficientnet-b1"),
                 in_channels: int = 1, out_channels: int = 2, bn_momentum: float = 0.1) -> None:
        members = [
            EfficientNetBN(name, pretrained=False, progress=False, spatial_dims=2, in_channels=in_channels,
                           num_classes=out_channels, norm=("batch", {"eps": 1e-3, "momentum": bn_momentum}))
            for name in model_names
        ]
        for member in members:
            nn.init.zeros_(member._fc.weight)
            nn.init.zeros_(member._fc.bias)
        super().__init__(members)
