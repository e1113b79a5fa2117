"""TorchScript and ONNX exports with MONAI's own exporters, and the check that they agree with PyTorch.

The exporters are the functions behind ``python -m monai.bundle ckpt_export`` / ``onnx_export``,
run on the exported bundle's configs, so the TorchScript model carries the exported
``inference.json`` and ``metadata.json``. ONNX goes through the TorchScript-based exporter
(``dynamo=False``): PyTorch >= 2.9 defaults to the dynamo exporter, which needs ``onnxscript``
(not a dependency here); batch and image sides are dynamic axes.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ExportError

__all__ = ["ONNX_CONVERTER_KWARGS", "TOLERANCE", "build_network", "check_agreement", "compare_exports",
           "export_onnx", "export_torchscript", "add_saliency_output",
           "has_saliency_tail", "SALIENCY_OUTPUT"]

#: TorchScript-based ONNX export with named, dynamic inputs and outputs (see the module docstring).
ONNX_CONVERTER_KWARGS: dict[str, Any] = {
    "dynamo": False,
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch"}},
}

#: ``max |export - PyTorch|`` allowed on the logits. TorchScript runs the same kernels (equal on CPU);
#: onnxruntime has its own, so float32 rounding differs slightly.
TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4}


def build_network(config_file: str | os.PathLike, net_id: str = "network_def") -> torch.nn.Module:
    """``network_def`` of a bundle config, instantiated (imports the bundle's code, which must be importable)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    return parser.get_parsed_content(net_id)


def export_torchscript(bundle_dir: str | os.PathLike, filepath: str = "models/model.ts",
                       ckpt_file: str = "models/model.pt", config_file: str = "configs/inference.json",
                       meta_file: str = "configs/metadata.json") -> Path:
    """``python -m monai.bundle ckpt_export network_def ...`` on a bundle folder (scripted, not traced).

    Scripting keeps the input size free (the student pools globally); the saved module carries
    ``metadata.json`` and ``inference.json`` as extra files (``monai.data.load_net_with_metadata``).
    """
    from monai.bundle import ckpt_export

    root = Path(bundle_dir)
    ckpt_export(net_id="network_def", filepath=str(root / filepath), ckpt_file=str(root / ckpt_file),
                meta_file=str(root / meta_file), config_file=str(root / config_file), use_trace=False)
    return root / filepath


def export_onnx(bundle_dir: str | os.PathLike, input_shape: Sequence[int], filepath: str = "models/model.onnx",
                ckpt_file: str = "models/model.pt", config_file: str = "configs/inference.json",
                meta_file: str = "configs/metadata.json") -> Path:
    """``python -m monai.bundle onnx_export network_def ... --use_trace True`` with :data:`ONNX_CONVERTER_KWARGS`."""
    try:
        import onnx  # noqa: F401
    except ImportError as error:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install -e '.[export]'") from error
    from monai.bundle import onnx_export

    root = Path(bundle_dir)
    onnx_export(net_id="network_def", filepath=str(root / filepath), ckpt_file=str(root / ckpt_file),
                meta_file=str(root / meta_file), config_file=str(root / config_file), use_trace=True,
                input_shape=list(input_shape), converter_kwargs=copy.deepcopy(ONNX_CONVERTER_KWARGS))
    return root / filepath


#: the second output of ``model.onnx`` where the network declares a saliency tail (:func:`add_saliency_output`)
SALIENCY_OUTPUT = "saliency_activations"


class _WithSaliencyOutput(torch.nn.Module):
    """``network`` returning ``(logits, the saliency layer's activations)``: what the ONNX export traces."""

    def __init__(self, network: torch.nn.Module, layer: str) -> None:
        super().__init__()
        self.network, self.layer = network, layer

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = self.network.get_submodule(self.layer).register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            logits = self.network(images)
        finally:
            handle.remove()
        return logits, captured[-1]


def has_saliency_tail(network: torch.nn.Module, layer: str | None) -> bool:
    """Whether ``network`` declares the part after ``layer`` (``network.saliency_tail(layer)`` is a module)."""
    declare = getattr(network, "saliency_tail", None)
    return bool(layer) and callable(declare) and declare(str(layer)) is not None


@torch.no_grad()
def add_saliency_output(onnx_path: str | os.PathLike, network: torch.nn.Module, layer: str | None,
                        input_shape: Sequence[int]) -> bool:
    """Re-export ``onnx_path`` with a second output, ``saliency_activations`` (the activations of ``layer``), when
    ``network`` declares its tail after that layer; returns whether it did.

    The first output stays the logits (``pred``), so every consumer of ``model.onnx`` works as before. With both
    outputs from one ONNX Runtime run, Grad-CAM needs only a backward pass through the PyTorch tail
    (:meth:`bundle.handlers.SaliencyWriter.explain_onnx`). The activations are checked against PyTorch's
    (:data:`TOLERANCE`); a network without a declared tail keeps the single output.
    """
    if not has_saliency_tail(network, layer):
        return False
    import onnxruntime

    network = network.eval().cpu()
    wrapper = _WithSaliencyOutput(network, str(layer)).eval()
    kwargs = copy.deepcopy(ONNX_CONVERTER_KWARGS)
    kwargs["output_names"] = [*kwargs["output_names"], SALIENCY_OUTPUT]
    kwargs["dynamic_axes"][SALIENCY_OUTPUT] = {0: "batch", 2: "height", 3: "width"}
    inputs = torch.rand(*input_shape, generator=torch.Generator().manual_seed(0))
    path = Path(onnx_path)
    partial = path.with_name(path.name + ".partial")
    torch.onnx.export(wrapper, inputs, str(partial), **kwargs)
    session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    logits, activations = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    reference_logits, reference = wrapper(inputs)
    difference = max(float((torch.from_numpy(activations) - reference).abs().max()),
                     float((torch.from_numpy(logits) - reference_logits).abs().max()))
    if not difference <= TOLERANCE["onnx"] * max(1.0, float(reference.abs().max())):
        partial.unlink()
        raise ExportError(f"the ONNX export's {SALIENCY_OUTPUT} ({layer}) disagree with PyTorch's: max |difference| "
                          f"{difference:.3g}")
    os.replace(partial, path)
    return True


@torch.no_grad()
def compare_exports(network: torch.nn.Module, inputs: torch.Tensor, torchscript: str | os.PathLike | None = None,
                    onnx: str | os.PathLike | None = None) -> dict[str, float]:
    """``max |export(x) - network(x)|`` over ``inputs`` (a batch) for each export given, on CPU.

    TorchScript is loaded with ``torch.jit.load``, ONNX run with onnxruntime's CPU provider: the
    runtimes a deployment would use, not the exporter's own in-memory objects.
    """
    network = network.eval().cpu()
    inputs = torch.as_tensor(inputs, dtype=torch.float32).cpu()
    reference = network(inputs)
    result: dict[str, float] = {}
    if torchscript is not None:
        module = torch.jit.load(str(torchscript), map_location="cpu").eval()
        result["torchscript"] = float((module(inputs) - reference).abs().max())
    if onnx is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        output = torch.from_numpy(session.run(None, {name: inputs.numpy()})[0])
        result["onnx"] = float((output - reference).abs().max())
    return result


def check_agreement(agreement: Mapping[str, float]) -> None:
    """Raise :class:`ExportError` when an export's logits are further from PyTorch's than :data:`TOLERANCE`."""
    for kind, difference in agreement.items():
        if not difference <= TOLERANCE[kind]:
            raise ExportError(f"{kind} export disagrees with the PyTorch network: max |difference| "
                              f"{difference:.3g} > {TOLERANCE[kind]:g}")
