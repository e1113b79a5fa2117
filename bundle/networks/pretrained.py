"""Start a stage's network from weights trained elsewhere (``init_checkpoint``).

The paper's teacher is an ImageNet-pretrained EfficientNet-B6 + B7 ensemble; trained from
scratch on a few thousand radiographs, the bundle's teachers are no stronger than the 3-conv
student, so distillation has nothing to pass on (``docs/results.md``). This bundle never
downloads weights; a user who has them (ImageNet EfficientNets, a CheXpert DenseNet121, an
earlier run's ``model.pt``) names the file and training starts from it::

    python -m monai.bundle run training --config_file "['configs/student.json','configs/teacher.json']" \\
        --teacher_members "['efficientnet-b6','efficientnet-b7']" \\
        --init_checkpoint "{'members.0': 'efficientnet-b6.pth', 'members.1': 'efficientnet-b7.pth'}"
    python -m monai.bundle run training --config_file "['configs/student.json','configs/assistant.json']" \\
        --init_checkpoint densenet121.pth

Rules, tensor by tensor (by name, after the optional module prefix):

* same shape: copied;
* a convolution kernel with 3 input channels where the network has 1 (ImageNet's RGB stem
  on a grayscale radiograph): summed over the input channels, so the filter answers a gray
  image (R = G = B) exactly as the RGB filter did;
* anything else (a classifier for another number of classes, a name the network lacks): left
  as the network initialised it, and listed.

A checkpoint that fits nothing is an error (the wrong network, most likely), as is a missing file.
A resumed run (``checkpoints/last.pt``) overwrites these weights with its own, as it should.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from monai.networks.utils import copy_model_state
from torch import nn

from ..checkpoints import CheckpointError, read_state_dict
from ..distributed import unwrap

__all__ = ["InitReport", "load_initial_weights", "read_weights"]

logger = logging.getLogger(__name__)


@dataclass
class InitReport:
    """What :func:`load_initial_weights` did, tensor names as in the network."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # RGB kernels summed to one input channel
    skipped: list[str] = field(default_factory=list)  # shape does not fit: kept as initialised
    unused: list[str] = field(default_factory=list)  # in the checkpoint, not in the network

    def summary(self) -> str:
        text = f"{len(self.loaded)} tensors loaded, {len(self.adapted)} RGB kernels summed to one channel"
        if self.skipped:
            text += f", {len(self.skipped)} kept as initialised (shape differs: {', '.join(self.skipped[:4])}"
            text += ", ...)" if len(self.skipped) > 4 else ")"
        if self.unused:
            text += f", {len(self.unused)} checkpoint tensors unused"
        return text


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: a plain one, a bundle ``model.pt``, or one nested under ``model``,
    ``network`` or ``state_dict`` (:func:`bundle.checkpoints.read_state_dict`); a DDP ``module.`` prefix is dropped.

    Raises:
        FileNotFoundError: the file does not exist (named).
        ValueError: the file holds no tensors by name (named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_checkpoint not found: {str(path)!r}")
    try:
        state = read_state_dict(path)
    except CheckpointError as error:
        raise ValueError(f"init_checkpoint {path}: {error}") from None
    return state


def _is_rgb_of(value: torch.Tensor, target: torch.Tensor | None) -> bool:
    """An RGB convolution kernel where the network has the same kernel for one input channel."""
    return (target is not None and value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3
            and target.shape[1] == 1 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:])


@torch.no_grad()
def load_initial_weights(network: nn.Module, checkpoint: str | os.PathLike | Mapping[str, str | os.PathLike] | None
                         ) -> InitReport | None:
    """Copy what fits of ``checkpoint`` into ``network`` (see the module docstring); None does nothing.

    ``checkpoint`` is a path, or ``{module prefix: path}`` to fill parts of the network, e.g.
    ``{"members.0": "b6.pth", "members.1": "b7.pth"}`` for the teacher ensemble's members.
    RGB stems are summed to one channel here; the copy by name and shape is MONAI's
    :func:`monai.networks.utils.copy_model_state`.

    Raises:
        FileNotFoundError, ValueError: a missing or unreadable file, an unknown prefix, or a
            checkpoint of which no tensor fits the network.
    """
    if not checkpoint:
        return None
    sources = dict(checkpoint) if isinstance(checkpoint, Mapping) else {"": checkpoint}
    network = unwrap(network)
    own = network.state_dict()
    report = InitReport()
    for prefix, path in sources.items():
        prefix = prefix.rstrip(".") + "." if prefix.rstrip(".") else ""
        if prefix and not any(k.startswith(prefix) for k in own):
            raise ValueError(f"init_checkpoint: the network has no module {prefix[:-1]!r} (for {path})")
        source = read_weights(path)
        adapted = {key for key, value in source.items() if _is_rgb_of(value, own.get(prefix + key))}
        source = {key: value.sum(dim=1, keepdim=True) if key in adapted else value for key, value in source.items()}
        _, updated, _ = copy_model_state(network, source, dst_prefix=prefix, inplace=True)
        if not updated:
            where = f" under {prefix[:-1]!r}" if prefix else ""
            raise ValueError(f"init_checkpoint {path}: no tensor fits the network{where} (another architecture?); "
                             f"its first names: {list(source)[:3]}")
        report.adapted += [prefix + key for key in source if key in adapted]
        report.loaded += [name for name in updated if name[len(prefix):] not in adapted]
        report.skipped += [prefix + key for key in source if prefix + key in own and prefix + key not in updated]
        report.unused += [prefix + key for key in source if prefix + key not in own]
    logger.info("init_checkpoint: %s", report.summary())
    return report
