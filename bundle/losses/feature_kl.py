"""KL divergence between feature maps, as spatial distributions per channel.

Formula, for student and teacher feature maps ``s`` and ``t`` of the same shape
(N x C x H x W, or any N x C x spatial), temperature ``T``:

    p_nc = softmax_over_positions(t_nc / T),   q_nc = softmax_over_positions(s_nc / T)
    L = T^2 * mean_{n,c} sum_x p_nc(x) * (log p_nc(x) - log q_nc(x))

Each channel of each sample is turned into a distribution over its H*W positions
("where does this channel fire"), and the student's is pulled towards the
teacher's by ``KL(teacher || student)``; the ``T^2`` factor keeps gradient
magnitudes comparable across temperatures, as for soft labels (the same
channel-wise distillation as Shu et al., "Channel-wise knowledge distillation
for dense prediction", ICCV 2021). The loss is 0 for identical maps, and
invariant to adding a constant per channel (softmax is shift-invariant).

Shapes must match exactly: a :class:`~bundle.distill.FeatureAdapter` maps the
student's (here: the assistant's) channels and size to the teacher's beforehand.
The teacher map is detached (it is a target).

Paper: the ``lambda_1 E_{x~P}[log f_T / f_A]`` term of eq. 3 of Bandyopadhyay
et al., "A distillation based approach for the diagnosis of diseases": KL
divergence between the teacher's and the assistant's intermediate feature maps.
The paper does not say how a feature map becomes a distribution; the spatial
softmax per channel is our choice.

Config example::

    "feature_loss": {"_target_": "bundle.losses.FeatureKLLoss", "temperature": 1.0}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureKLLoss"]


class FeatureKLLoss(nn.Module):
    """``T^2 * KL(teacher || student)`` of per-channel spatial softmaxes, mean over N and C.

    Args:
        temperature: softening temperature ``T`` (> 0) applied to the activations.

    Example::

        >>> x = torch.randn(2, 4, 8, 8)
        >>> float(FeatureKLLoss()(x, x))
        0.0
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.shape != teacher_feat.shape or student_feat.dim() < 3:
            raise ValueError(
                f"feature maps must both be N x C x spatial with the same shape, got student "
                f"{tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} (adapt them first)"
            )
        t = self.temperature
        log_q = F.log_softmax(student_feat.flatten(2) / t, dim=-1)
        log_p = F.log_softmax(teacher_feat.detach().to(student_feat.dtype).flatten(2) / t, dim=-1)
        per_channel = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
        return per_channel.mean() * t * t
