"""Intermediate features by forward hooks on named modules, and adapters between them.

Feature capture is torchdistill-style: a forward hook on each named submodule
(``model.get_submodule(name)``) stores its output, so neither the teacher nor
the student is rewritten, and MONAI networks are used as they are. Names are
those of ``model.named_modules()``; for this project:

* student (:class:`~bundle.networks.ThreeConvStudent`): ``conv1``, ``conv2``, ``conv3``
  (at 224 px: 64 x 56 x 56, 64 x 28 x 28, 128 x 14 x 14);
* MONAI ``DenseNet121`` (the paper's assistant): ``features.denseblock1`` ...
  ``features.denseblock4``, ``features.transition1`` ... ``features.transition3``
  (at 224 px: denseblock1 256 x 56 x 56, denseblock2 512 x 28 x 28, denseblock3
  1024 x 14 x 14, denseblock4 1024 x 7 x 7), which line up in size with the
  student's three blocks.

A :class:`FeatureAdapter` (1x1 convolution, then a resize) maps a student map to
the channel count and size of the teacher map it is compared with; the adapters
are trained with the student. :func:`probe_feature_shapes` and
:func:`build_adapters` build them from one dummy forward.

Config example::

    "student_hooks": {"_target_": "bundle.distill.FeatureHooks", "model": "@student",
                      "module_names": ["conv1", "conv2", "conv3"]}
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureAdapter", "FeatureHooks", "adapter_key", "build_adapters", "probe_feature_shapes", "resize_maps"]

Shape = tuple[int, ...]


def _resolve(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``, or a ValueError naming the closest existing names."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:8]
        raise ValueError(
            f"{type(model).__name__} has no submodule {name!r}; closest names: {close}"
        ) from None


class FeatureHooks:
    """Forward hooks that keep the latest output of each named submodule.

    Args:
        model: the network to observe (not modified, apart from the hooks).
        module_names: names as in ``model.named_modules()``, e.g. ``["conv1", "conv2"]``.
        clone: store a clone of each output. Use it when a later in-place operation
            would overwrite the captured tensor (e.g. MONAI DenseNet's
            ``class_layers.relu`` is in-place on ``features.norm5``'s output).

    ``features`` maps each name to the output of the latest forward (with its
    autograd graph: the student's features carry gradients; run the teacher under
    ``torch.no_grad()``). Usable as a context manager, which removes the hooks on
    exit::

        with FeatureHooks(student, ["conv1", "conv2", "conv3"]) as hooks:
            logits = student(images)
            maps = hooks.features
    """

    def __init__(self, model: nn.Module, module_names: Sequence[str], clone: bool = False) -> None:
        if isinstance(module_names, str):
            module_names = [module_names]
        self.module_names = list(dict.fromkeys(module_names))
        self.clone = clone
        self.features: dict[str, torch.Tensor] = {}
        modules = {name: _resolve(model, name) for name in self.module_names}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self.clone and isinstance(output, torch.Tensor):
                output = output.clone()
            self.features[name] = output

        return hook

    def clear(self) -> None:
        """Forget the stored features (they hold the autograd graph until then)."""
        self.features = {}

    def remove(self) -> None:
        """Remove the hooks; later forwards are no longer captured."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (H, W), got {size}")
    return size


def resize_maps(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """``N x C x H x W`` maps resized to ``size``: area averaging when shrinking, else bilinear.

    Shrinking in both dimensions uses ``adaptive_avg_pool2d`` (every input position is averaged
    in; exact block means when the factor is an integer), avoiding the aliasing of bilinear
    sampling, which skips positions when the factor exceeds 2; otherwise bilinear interpolation
    (``align_corners=False``). Both are linear with weights summing to 1.
    """
    size = _pair(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FeatureAdapter(nn.Module):
    """1x1 convolution to ``out_channels``, and a resize to ``size`` (2-D maps).

    Args:
        in_channels: channels of the student map.
        out_channels: channels of the teacher map.
        size: target ``(H, W)`` (or an int); None keeps the input size.

    Resize: when the target is no larger than the input in both dimensions
    (downsampling), ``adaptive_avg_pool2d``: every input position is averaged in,
    without the aliasing of bilinear sampling, which skips positions when the
    factor exceeds 2; otherwise (upsampling, or mixed) bilinear interpolation
    (``align_corners=False``). Both resizes are linear with weights summing to 1,
    so they commute with the 1x1 convolution; the convolution is applied at the
    smaller of the two resolutions, which gives the same result for less work.

    Example::

        >>> FeatureAdapter(64, 256, size=8)(torch.zeros(2, 64, 16, 16)).shape
        torch.Size([2, 256, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, size: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.size = _pair(size)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.size is None else resize_maps(x, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"FeatureAdapter expects N x C x H x W maps, got {tuple(x.shape)}")
        shrinks = self.size is not None and self.size[0] * self.size[1] < x.shape[-2] * x.shape[-1]
        if shrinks:
            return self.conv(self._resize(x))
        return self._resize(self.conv(x))


def adapter_key(student_name: str, teacher_name: str) -> str:
    """Key of the adapter of a (student, teacher) pair in :func:`build_adapters`' ModuleDict.

    ``nn.ModuleDict`` keys may not contain dots, so dots become slashes:
    ``adapter_key("conv1", "features.denseblock1") == "conv1->features/denseblock1"``.
    """
    return f"{student_name}->{teacher_name}".replace(".", "/")


def build_adapters(
    student_shapes: Mapping[str, Shape],
    teacher_shapes: Mapping[str, Shape],
    pairs: Iterable[tuple[str, str]],
    identity_if_equal: bool = True,
) -> nn.ModuleDict:
    """One :class:`FeatureAdapter` per (student name, teacher name) pair.

    Args:
        student_shapes: ``{name: (C, H, W)}`` of the student, e.g. from :func:`probe_feature_shapes`.
        teacher_shapes: ``{name: (C, H, W)}`` of the teacher.
        pairs: ``[(student_name, teacher_name), ...]``.
        identity_if_equal: use ``nn.Identity`` where the shapes already match
            (the loss then compares the raw maps, as the paper does).

    Returns:
        ``nn.ModuleDict`` keyed by :func:`adapter_key`; register it on the trained
        module (or give its parameters to the optimizer) so the adapters learn.
    """
    adapters = nn.ModuleDict()
    for student_name, teacher_name in pairs:
        for name, shapes, side in (
            (student_name, student_shapes, "student"),
            (teacher_name, teacher_shapes, "teacher"),
        ):
            if name not in shapes:
                raise ValueError(f"no {side} shape for {name!r}; known: {sorted(shapes)}")
        s_shape, t_shape = tuple(student_shapes[student_name]), tuple(teacher_shapes[teacher_name])
        if len(s_shape) != 3 or len(t_shape) != 3:
            raise ValueError(f"shapes must be (C, H, W), got {s_shape} and {t_shape}")
        if identity_if_equal and s_shape == t_shape:
            adapter: nn.Module = nn.Identity()
        else:
            adapter = FeatureAdapter(s_shape[0], t_shape[0], size=t_shape[1:])
        adapters[adapter_key(student_name, teacher_name)] = adapter
    return adapters


def probe_feature_shapes(
    model: nn.Module, module_names: Sequence[str], input_shape: Sequence[int]
) -> dict[str, Shape]:
    """Shapes ``(C, H, W)`` (without the batch) of the named modules' outputs.

    Runs one forward of zeros of shape ``(1, *input_shape)`` (``input_shape`` is one
    sample, e.g. ``(1, 224, 224)``) on the model's device and dtype, under
    ``torch.no_grad()`` and in eval mode (batch norm statistics untouched); every
    submodule's previous train/eval flag is restored afterwards.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    modes = {module: module.training for module in model.modules()}
    hooks = FeatureHooks(model, module_names)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
        missing = [name for name in hooks.module_names if name not in hooks.features]
        if missing:
            raise ValueError(f"modules {missing} were not called in the forward pass")
        return {name: tuple(hooks.features[name].shape[1:]) for name in hooks.module_names}
    finally:
        hooks.remove()
        for module, training in modes.items():
            module.training = training
