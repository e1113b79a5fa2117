"""Reading network weights from checkpoint files, and saying clearly why they do not fit.

The one place the bundle turns a ``.pt`` file into a network's weights: the export, the
Deploy app, a frozen teacher (:func:`bundle.distill.load_frozen`) and ``init_checkpoint``
(:func:`bundle.networks.load_initial_weights`) all read through :func:`read_state_dict` and
check through :func:`check_state_dict`, so every one of them accepts the same files
(a plain ``state_dict``, a bundle ``models/model.pt``, a nested checkpoint, weights saved from
DDP) and reports a misfit the same way. The resume checkpoint
(:class:`bundle.handlers.ResumeCheckpoint`) is a different format (the whole training state)
and has its own reader. Files are loaded with ``weights_only=True``: a checkpoint is data,
never code. Torch only: this module imports nothing else of the bundle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "read_state_dict", "check_state_dict", "load_weights"]

NESTED_KEYS = ("model", "network", "state_dict")  # where nested checkpoints keep the network's weights


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the network; the message names the file."""


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(torch.is_tensor(v) for v in value.values())


def read_state_dict(ckpt: str | os.PathLike, key_in_ckpt: str | None = None) -> dict[str, torch.Tensor]:
    """The network weights in ``ckpt``: a plain ``state_dict`` (``model.pt``) or one entry of a nested checkpoint.

    Nested checkpoints (``checkpoints/last.pt`` keeps ``network``, ``optimizer`` ...; MONAI's
    ``CheckpointSaver`` keeps ``model``) need ``key_in_ckpt`` unless exactly one of ``model`` /
    ``network`` / ``state_dict`` holds weights. A ``module.`` prefix on every name (saved from
    ``DataParallel`` / ``DistributedDataParallel``) is dropped.

    Raises:
        CheckpointError: the file is missing or unreadable, the entry does not exist or is
            ambiguous, or the file holds no weights.
    """
    path = Path(ckpt)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train first, e.g. outputs/student/model.pt)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, pickled code ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    if key_in_ckpt:
        if not isinstance(content, Mapping) or key_in_ckpt not in content:
            keys = sorted(content) if isinstance(content, Mapping) else type(content).__name__
            raise CheckpointError(f"checkpoint {path} has no entry {key_in_ckpt!r} (it has: {keys})")
        content = content[key_in_ckpt]
    elif isinstance(content, Mapping) and not _is_state_dict(content):
        nested = [k for k in NESTED_KEYS if _is_state_dict(content.get(k))]
        if len(nested) != 1:
            raise CheckpointError(f"checkpoint {path} is not a plain state_dict; it holds {sorted(content)}: "
                                  "name the entry with the network weights with --key_in_ckpt")
        content = content[nested[0]]
    if not _is_state_dict(content):
        raise CheckpointError(f"checkpoint {path} holds no network weights (a {type(content).__name__})")
    state = {str(k): v for k, v in content.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_state_dict(network: torch.nn.Module, state: Mapping[str, torch.Tensor], ckpt: str | os.PathLike,
                     what: str = "network_def", class_names: Sequence[str] | None = None) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or differently shaped weight.

    ``load_state_dict`` says the same in a long traceback; this says what it means: another network
    (a teacher or assistant checkpoint where a student is expected), or another number of classes.
    ``what`` names the network in the message (``network_def``, ``the teacher network`` ...);
    ``class_names``, when given, are quoted so that a user sees which classes the network was built for.
    """
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, network {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    lines = [f"checkpoint {ckpt} does not match {what} ({type(network).__name__}):"]
    if missing:
        lines.append(f"  {len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} weights the network does not have, e.g. {unexpected[:3]}")
    lines += [f"  {s}" for s in shapes[:5]]
    if missing or unexpected:
        lines.append(f"  it was saved from another network: build {what} as the one it was trained with")
    elif shapes and class_names is not None:
        lines.append(f"  the network is built for {len(class_names)} classes ({', '.join(class_names)}): "
                     f"if the model was trained on another data set, give its classes")
    elif shapes:
        lines.append("  trained for another class count or architecture?")
    raise CheckpointError("\n".join(lines))


def load_weights(network: torch.nn.Module, ckpt: str | os.PathLike, what: str = "network_def",
                 key_in_ckpt: str | None = None, class_names: Sequence[str] | None = None) -> torch.nn.Module:
    """Read ``ckpt``, check it fits ``network`` and load it (strictly); returns ``network``."""
    state = read_state_dict(ckpt, key_in_ckpt)
    check_state_dict(network, state, ckpt, what, class_names)
    network.load_state_dict(state, strict=True)
    return network
