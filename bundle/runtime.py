"""Which runtime computes the predictions: PyTorch (the default) or ONNX Runtime from the exported ``model.onnx``.

``configs/inference.json`` builds its evaluator's network with :func:`inference_network`::

    "backend": "pytorch",                                   # or "onnxruntime"
    "onnx_path": "$os.path.join(@bundle_root, 'models', 'model.onnx')",   # or models/model_int8.onnx
    "predictor": "$bundle.runtime.inference_network(@backend, @network, @onnx_path, @onnx_threads, @device)"

With ``onnxruntime`` the evaluator, the inferer and every handler run unchanged: :class:`OnnxRuntimeNetwork`
is a ``torch.nn.Module`` whose ``forward`` hands the batch to an ``onnxruntime.InferenceSession`` and gives
the logits back as a tensor on the input's device. The fp32 export gives the PyTorch network's probabilities
to 1e-4 (tested); the int8 one (``scripts/export_bundle.py --int8``) is faster on CPUs and checked on real
images when it is made.

Saliency needs gradients, which ONNX Runtime does not give. Grad-CAM needs only the saliency layer's
activations and the gradient of a class logit with respect to them, and for the students the network after
that layer is a small tail (pooling and the classifier). So ``scripts/export_bundle.py --onnx`` gives
``model.onnx`` a second output, ``saliency_activations``, where the network declares that tail
(``network.saliency_tail(layer)``), and with Grad-CAM on, one ONNX Runtime run gives the logits and the
activations; the gradient is taken through the PyTorch tail alone
(:meth:`bundle.handlers.SaliencyWriter.explain_onnx`). Without the second output or a declared tail, the maps
come from the whole PyTorch network (``@network``): a forward pass and a backward pass from the saliency layer
per explained class. ``docs/fast_inference.md`` has the numbers.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the ONNX output holding the saliency layer's activations (``bundle.export.exporters.add_saliency_output``)
SALIENCY_OUTPUT = "saliency_activations"

__all__ = ["SALIENCY_OUTPUT", "BACKENDS", "OnnxRuntimeNetwork", "inference_network", "onnxruntime_session"]

BACKENDS = ("pytorch", "onnxruntime")


def _missing(path: str | os.PathLike | None) -> FileNotFoundError:
    # an OSError naming the file: bundle.error_report makes it the last line the user sees
    return FileNotFoundError(errno.ENOENT, "no ONNX model for --backend onnxruntime (export one with "
                             "scripts/export_bundle.py --onnx [--int8], set --onnx_path, or use --backend pytorch)",
                             str(path))


def onnxruntime_session(path: str | os.PathLike, threads: int = 0, device: str | torch.device | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``: CUDA's provider first when ``device`` is CUDA and it is there.

    ``threads``: ONNX Runtime's intra-op threads (0: its default, one per physical core). Operators run
    sequentially (one inter-op thread): the students are chains, and a second pool only competes for the cores.
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("the onnxruntime backend needs onnxruntime: pip install 'cxr-distill[export]'") from error
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
    providers = ["CPUExecutionProvider"]
    if device is not None and torch.device(device).type == "cuda" and \
            "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


class OnnxRuntimeNetwork(torch.nn.Module):
    """A ``torch.nn.Module`` face on an ONNX Runtime session: ``forward(images) -> logits``.

    The session is made on first use (and again after unpickling), so building a config that names this
    backend costs nothing until it predicts. Inputs are float32 ``(B, C, H, W)``; the output is a float32
    tensor on the input's device. There are no parameters and no gradients.

    Args:
        path: the ``.onnx`` file (fp32 or int8 QDQ, as ``scripts/export_bundle.py`` writes them).
        threads: ONNX Runtime's intra-op threads (0: its default).
        device: where the bundle runs; CUDA uses ONNX Runtime's CUDA provider when installed.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.path, self.threads = Path(path), int(threads or 0)
        self.device_name = None if device is None else str(device)
        self._session: Any = None
        # set by a SaliencyWriter that maps from the activations: forward keeps the last batch's
        self.keep_activations = False
        self.last_activations: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = onnxruntime_session(self.path, self.threads, self.device_name)
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None  # sessions do not pickle
        state["last_activations"] = None
        return state

    @property
    def gives_activations(self) -> bool:
        """Whether the model has the saliency layer's activations as an output (``saliency_activations``)."""
        return SALIENCY_OUTPUT in [output.name for output in self.session.get_outputs()]

    def _run(self, images: torch.Tensor, activations: bool) -> list[np.ndarray]:
        session = self.session
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        names = [session.get_outputs()[0].name] + ([SALIENCY_OUTPUT] if activations else [])
        return session.run(names, {session.get_inputs()[0].name: array})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not (self.keep_activations and self.gives_activations):
            return torch.from_numpy(self._run(images, False)[0]).to(images.device)
        logits, activations = self.predict_with_activations(images)
        self.last_activations = (images.detach(), logits, activations)  # for the SaliencyWriter of this batch
        return logits

    def predict_with_activations(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, the saliency layer's activations)`` from one run; activations None when the model has none."""
        outputs = self._run(images, self.gives_activations)
        activations = torch.from_numpy(outputs[1]).to(images.device) if len(outputs) > 1 else None
        return torch.from_numpy(outputs[0]).to(images.device), activations

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, threads={self.threads}"


def inference_network(backend: str, network: torch.nn.Module, onnx_path: str | os.PathLike | None = None,
                      threads: int = 0, device: str | torch.device | None = None) -> torch.nn.Module:
    """The module that predicts: ``network`` itself (``"pytorch"``) or an :class:`OnnxRuntimeNetwork` of ``onnx_path``.

    The ONNX file is checked here, so a missing one stops the run before any image is read.
    """
    backend = str(backend).lower()
    if backend == "pytorch":
        return network
    if backend == "onnxruntime":
        if onnx_path is None or not Path(onnx_path).is_file():
            raise _missing(onnx_path)
        return OnnxRuntimeNetwork(onnx_path, threads, device)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
