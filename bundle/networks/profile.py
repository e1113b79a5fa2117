"""Size and cost of a network: parameters and FLOPs at the resolution it runs at.

FLOPs come from PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``),
which counts matrix multiplications and convolutions (2 FLOPs per multiply-add) in
one forward pass; element-wise operations (activations, batch norm, pooling) are not
counted, as in the papers' GFLOPs figures (which count multiply-adds of the same
layers: divide by 2 to compare with "MACs").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops", "network_profile"]


def count_parameters(network: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(network: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass on one input of ``input_shape`` (without the batch axis), in eval mode."""
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    training = network.training
    network.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            network(torch.zeros((1, *input_shape), device=device))
        return int(counter.get_total_flops())
    finally:
        network.train(training)


def network_profile(network: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """``{"parameters", "gflops", "input_shape"}`` of a network at one input size."""
    return {"parameters": count_parameters(network), "gflops": count_flops(network, input_shape) / 1e9,
            "input_shape": list(input_shape)}
