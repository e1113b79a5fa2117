"""What training needs to know about ``torch.distributed`` (multi-GPU / multi-node runs).

``configs/multi_gpu_train.json`` starts one process per GPU (``torchrun``), wraps the
network in ``DistributedDataParallel`` and gives each process its share of the data
(:func:`bundle.data.balanced_sampler` with ``distributed=True``). The rest of the
bundle asks these functions instead of assuming one process:

* handlers that write files or logs are disabled on every rank but 0
  (``"_disabled_": "$bundle.distributed.is_not_rank0()"``, as MONAI's tracking settings do);
* the distiller's adapters are not inside DDP (they belong to the loss, not to the
  student), so the trainer averages their gradients across processes itself
  (:func:`average_gradients`), keeping every copy identical;
* the frozen teacher is never wrapped in DDP: it has no gradients to synchronise.

Every function is a no-op in a single process.
"""

from __future__ import annotations

from collections.abc import Iterable

import os

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "is_not_rank0", "rank", "world_size", "init_distributed", "average_gradients",
           "barrier", "unwrap"]


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_not_rank0() -> bool:
    """For ``_disabled_`` of handlers that only the first process should run."""
    return rank() > 0


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the process group ``torchrun`` describes (env://) and return this process's device.

    The backend defaults to NCCL with CUDA and gloo without (CPU runs and tests).
    """
    use_cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce the mean of the gradients of parameters that DDP does not manage."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel (hooks and checkpoints use plain names)."""
    if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return network.module
    return network
