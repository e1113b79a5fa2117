"""Copies of a network without the forward hooks that other parts of a run put on it.

The distiller captures features by forward hooks on named modules of the trained network
(:mod:`bundle.distill.features`), and MONAI's CAMs hook the module they are given for good. A copy
made for another purpose (a moving average of the weights, a Grad-CAM pass during validation) must
not run those hooks, and ``copy.deepcopy`` of a hooked module would also deep-copy, through the
hooks' bound objects, whatever they belong to (the distiller and its feature store). So the hooks
are set aside while copying.
"""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Iterator

import torch

__all__ = ["hookless_copy", "without_forward_hooks"]

# the per-module dicts of hooks that run around forward and backward (torch >= 2.0 names)
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


@contextlib.contextmanager
def without_forward_hooks(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``network`` with its forward and backward hooks set aside, then put back."""
    kept = []
    for module in network.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if isinstance(hooks, dict) and hooks:
                kept.append((module, name, hooks))
                setattr(module, name, OrderedDict())
    try:
        yield network
    finally:
        for module, name, hooks in kept:
            setattr(module, name, hooks)


def hookless_copy(network: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``network`` without its forward and backward hooks (the original keeps them)."""
    with without_forward_hooks(network):
        return copy.deepcopy(network)
