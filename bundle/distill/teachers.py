"""Where a teacher's outputs come from: a frozen network run on each batch, or outputs kept by sample.

Every distillation method reads its teacher through one call, ``teacher.outputs(batch)``, which
returns a :class:`TeacherOutput`: the teacher's logits for the batch, the feature maps (or
attention maps) the method compares, and, when the teacher has no answer for some samples, a
mask of those it has. Three sources keep that contract:

* :class:`FrozenTeacher` (here): a trained network, frozen, run under ``no_grad`` on the batch's
  ``teacher_image`` (or ``image``); forward hooks on named modules capture its maps;
* :class:`~bundle.distill.TeacherOutputCache` computed once from that network over the training
  list (``teacher_cache``), looked up by ``sample_index``;
* the same cache read from a predictions file that was recorded elsewhere
  (``teacher_predictions``: a big ensemble on a GPU server, a commercial model, a previous run;
  :meth:`~bundle.distill.TeacherOutputCache.from_predictions`). It holds logits only, so methods
  that compare feature maps refuse it unless those terms are off.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from ..checkpoints import CheckpointError, load_weights
from ..keys import Keys
from ..stages import STAGES, stage_command
from .features import FeatureHooks, probe_feature_shapes

__all__ = ["TeacherOutput", "TeacherSource", "FrozenTeacher", "freeze", "load_frozen", "teacher_view"]


class TeacherOutput(NamedTuple):
    """The teacher's answer for one batch."""

    logits: torch.Tensor  # (B, K)
    features: dict[str, torch.Tensor]  # name -> map, e.g. (B, C, H, W) or an attention map (B, g, g)
    mask: torch.Tensor | None = None  # (B,) 1 where the teacher has an answer; None: for every sample


class TeacherSource(Protocol):
    """What a distillation method needs of its teacher."""

    @property
    def feature_names(self) -> frozenset[str]:
        """The maps :meth:`outputs` gives besides the logits."""

    def feature_shapes(self, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
        """Shape of one sample's map for each name (to size adapters)."""

    def outputs(self, batch: Mapping[str, Any]) -> TeacherOutput:
        """Logits, maps and mask for a training batch (tensors on the batch's device)."""


def freeze(network: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher is a fixed function."""
    network.eval()
    network.requires_grad_(False)
    return network


def load_frozen(
    network: nn.Module, checkpoint: str | os.PathLike | None, device: str | torch.device = "cpu", role: str = "teacher",
    stage: str | None = None,
) -> nn.Module:
    """Load a trained stage's ``model.pt`` into ``network``, move it to ``device`` and freeze it.

    ``stage`` (default ``role``, a key of :data:`bundle.stages.STAGES`) names, in the error message,
    the command that trains it; ``--<role>_ckpt`` is the id that points at it.

    Raises:
        FileNotFoundError: no checkpoint given, or the file is missing; the message says
            which stage to train first.
        ValueError: the checkpoint cannot be read or does not fit the network (e.g. another class count).
    """
    if checkpoint is None or not os.path.isfile(checkpoint):
        raise FileNotFoundError(  # naming the file: bundle.error_report makes the message the last line
            errno.ENOENT,
            f"{role} checkpoint not found: {checkpoint!r}. Train the {role} stage first "
            f"({stage_command(stage or role) if (stage or role) in STAGES else 'its stage config'}) "
            f"or pass --{role}_ckpt <path to its model.pt>.",
            str(checkpoint),
        )
    try:
        load_weights(network, checkpoint, what=f"the {role} network")
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    return freeze(network.to(device))


def teacher_view(batch: Mapping[str, Any]) -> torch.Tensor:
    """The images as the teacher sees them: the batch's ``teacher_image`` when it has one, else ``image``."""
    view = batch.get(Keys.TEACHER_IMAGE)
    return batch[Keys.IMAGE] if view is None else view


class FrozenTeacher:
    """A frozen network as a teacher source: run on each batch, its named maps captured by hooks.

    Args:
        network: the trained teacher, frozen (:func:`load_frozen`).
        feature_names: modules (``network.named_modules()`` names) whose outputs are kept.
        input_shape: one input without the batch axis, ``(C, H, W)``, at the teacher's own size:
            used to size adapters, and to refuse a batch without the teacher's view when the
            teacher sees another size than the student.
        check_view: refuse images of another size than ``input_shape`` (a teacher with its own view).
        maps: extra maps computed from the network after its forward pass, ``{name: fn(network)}``
            (e.g. a ViT's mean attention map).
    """

    def __init__(self, network: nn.Module, feature_names: Sequence[str] = (), input_shape: Sequence[int] = (1, 224, 224),
                 check_view: bool = False, maps: Mapping[str, Callable[[nn.Module], torch.Tensor]] | None = None) -> None:
        self.network = freeze(network)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.check_view = bool(check_view)
        self.maps = dict(maps or {})
        self.hooks = FeatureHooks(network, list(feature_names))

    @property
    def feature_names(self) -> frozenset[str]:
        return frozenset(self.hooks.module_names) | frozenset(self.maps)

    def feature_shapes(self, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
        return probe_feature_shapes(self.network, list(names), self.input_shape)

    def release(self) -> None:
        """Remove the hooks (the outputs are kept elsewhere from now on, e.g. in a cache)."""
        self.hooks.remove()

    @torch.no_grad()
    def outputs(self, batch: Mapping[str, Any]) -> TeacherOutput:
        images = teacher_view(batch)
        if self.check_view and tuple(images.shape[2:]) != self.input_shape[1:]:
            raise ValueError(
                f"the teacher sees {self.input_shape[1:]} images (teacher_input_shape) but got "
                f"{tuple(images.shape[2:])}: the training preprocessing must give each sample a 'teacher_image' "
                f"at teacher_image_size (configs/student.json#preprocessing#teacher_view)")
        if self.network.training:  # nothing may move its batch-norm statistics
            self.network.eval()
        logits = self.network(images)
        features = dict(self.hooks.features)
        self.hooks.clear()
        features.update({name: fn(self.network) for name, fn in self.maps.items()})
        return TeacherOutput(logits, features)
