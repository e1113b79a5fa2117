"""Grad-CAM / Grad-CAM++ saliency of a CNN's decisions, written beside the predictions.

Uses ``monai.visualize.GradCAM`` / ``GradCAMpp`` on the module named ``target_layer``
(e.g. ``conv3`` of the 3-conv student, ``features.denseblock4`` of DenseNet121 and DenseNet161,
``members.0._conv_head`` of the EfficientNet teacher, ``head`` of the compact student; all of them in
``bundle.networks.NETWORKS``). For every readable input and every explained class it writes, under
``<output_dir>/saliency/``:

* ``<input name>_<class>.npy``: the raw map, float32, in [0, 1] (1 = strongest evidence for
  the class), at the network's input size (MONAI upsamples it; :func:`unit_range` scales it:
  MONAI's default normaliser would flip it);
* ``<input name>_<class>.png``: the map over the radiograph *at the radiograph's own resolution*
  (the file is read again, and the map upsampled bilinearly onto its pixels), with a colour bar
  and the class and its probability in the top-left corner (:func:`bundle.figures.saliency_overlay`),
  so that it can be read beside the original; inputs that cannot be read again (an in-memory
  array) get the overlay on the network's input;
* ``maps.csv``: per input and explained class, the input's path and its two files.

``<input name>`` is the input's whole file name, extension included (:func:`output_name`:
``CASE.PNG`` -> ``CASE.PNG_Nodule.npy``), so files never overwrite each other: not two inputs
that share a stem or a UID prefix, not two classes of one image; the same file name in another
folder gets ``_2``, ``_3`` ... (``maps.csv`` says which is which).

Explained classes: the predicted class (multi-class), or the findings at or above
their threshold (multi-label; the most probable one if none is), at most
``max_classes`` per image. Each class needs one backward pass over the batch.
:meth:`SaliencyWriter.explain` without probabilities predicts and explains the top class in one
forward pass (the single-image, real-time path of the deploy app). With ONNX Runtime predicting,
:meth:`SaliencyWriter.explain_onnx` (and the handler, given ``predictor``) maps from the ONNX model's
``saliency_activations`` through the network's declared tail after the layer (:class:`SaliencyTail`):
the same maps for the cost of the tail's backward pass; else from the whole network.

Config example (``inference.json``, in ``evaluator#val_handlers``)::

    {"_target_": "bundle.handlers.SaliencyWriter", "network": "@network", "target_layer": "conv3",
     "output_dir": "@output_dir", "class_names": "@class_names", "task": "@task"}
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.utils import blend_images
from PIL import Image

from ..data.errors import CXRDataError
from ..data.io import load_cxr
from ..figures import saliency_overlay, save_figure
from ..keys import Keys
from ..metrics import probabilities as task_probabilities
from ..thresholds import class_thresholds

__all__ = ["SaliencyWriter", "class_tokens", "make_cam", "output_name", "read_original", "unit_range", "saliency_targets",
           "write_overlay", "gradients_from_layer", "SaliencyTail", "saliency_tail"]

METHODS = {"gradcam": GradCAM, "gradcampp": GradCAMpp}
#: how far the PyTorch tail's logits (on ONNX Runtime's activations) may be from ONNX Runtime's, relative to the
#: largest logit, before the maps are taken from the whole PyTorch network instead
TAIL_TOLERANCE = 1e-3
logger = logging.getLogger(__name__)


def as_flag(value: object) -> bool:
    """A config switch given on the command line: ``--saliency_enabled false`` arrives as the string "false"
    (Python Fire reads only ``False`` as a bool), which ``bool()`` would take for true."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map (``B x 1 x H x W``) scaled linearly from its (min, max) to (0, 1); a flat map becomes zeros.

    MONAI's CAMs default to ``default_normalizer``, which maps (min, max) to (1, 0): it flips the
    map, so that the regions that raise the class score most come out darkest. Every CAM of the
    bundle is built with this instead (:func:`make_cam`).
    """
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
    scaled = (flat - low[:, None]) / span[:, None]
    scaled[high <= low] = 0.0
    return scaled.reshape(maps.shape)


def per_image_class_score(logits: torch.Tensor, class_idx: int | torch.Tensor) -> torch.Tensor:
    """Each image's score for its own class, shaped ``(B, 1, 1, 1)`` to broadcast against ``(B, C, H, W)``.

    Replaces MONAI 1.6's ``ModelWithHooks.class_score`` (``logits[:, class_idx].squeeze()``), which is
    wrong for batches in two ways: with ``class_idx=None`` (each image's arg-max, a ``(B,)`` tensor) it
    gives a ``B x B`` score, so every image's map explains the sum of all images' top classes; and its
    ``(B,)`` score multiplies Grad-CAM++'s ``(B, C, H, W)`` gradients along the width, failing, or
    mixing images when ``W == B``.
    """
    index = torch.as_tensor(class_idx, device=logits.device).reshape(-1).expand(len(logits))
    return logits.gather(1, index[:, None]).reshape(len(logits), 1, 1, 1)


def make_cam(method: str, network: torch.nn.Module, target_layer: str) -> GradCAM | GradCAMpp:
    """MONAI's Grad-CAM (``"gradcam"``) or Grad-CAM++ (``"gradcampp"``) on ``target_layer``, maps in [0, 1]
    with 1 where the class evidence is strongest (:func:`unit_range`), exact for batches
    (:func:`per_image_class_score`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    cam = METHODS[method](nn_module=network, target_layers=target_layer, postprocessing=unit_range)
    cam.nn_module.class_score = per_image_class_score
    return cam


def saliency_targets(probabilities: torch.Tensor, task: str, threshold: float | Sequence[float] = 0.5,
                     max_classes: int = 3, ranking: torch.Tensor | None = None) -> list[list[int]]:
    """Per sample, the class indices to explain (see the module docstring); ``threshold``: one for every class
    or one per class (in class order). ``ranking`` (the logits, where known) orders the classes: saturated
    float32 probabilities tie (1.0 for two classes) where the logits do not, and the top class must be the
    logits' arg-max, whose map the first Grad-CAM pass already made."""
    targets = []
    for row, p in enumerate(probabilities):
        thresholds = [float(threshold)] * len(p) if np.ndim(threshold) == 0 else [float(t) for t in threshold]
        order = torch.argsort(p if ranking is None else ranking[row], descending=True, stable=True).tolist()
        chosen = order[:1] if task == "multiclass" else ([k for k in order if p[k] >= thresholds[k]] or order[:1])
        targets.append(chosen[:max_classes])
    return targets


@contextlib.contextmanager
def gradients_from_layer(network: torch.nn.Module, layer: str) -> Iterator[None]:
    """Within the block, backward passes stop at ``layer``: what Grad-CAM needs, at a fraction of the cost.

    Grad-CAM needs the gradient of a class score with respect to the activations of one layer,
    nothing below it and no parameter gradient. A plain backward pass computes all of them, down to
    the first convolution (about twice a forward pass). Here the parameters stop requiring gradients
    and the layer's output is made to require them, so the backward pass covers only the layers
    after it (for the compact student: pooling and the classifier). The maps are the same; the
    parameters' ``requires_grad`` flags are restored on exit.
    """
    flags = [(parameter, parameter.requires_grad) for parameter in network.parameters()]

    def hook(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and torch.is_grad_enabled() and not output.requires_grad:
            output.requires_grad_(True)  # a leaf: nothing before it requires gradients

    handle = network.get_submodule(layer).register_forward_hook(hook)
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        with warnings.catch_warnings():  # it is meant to: the hook's input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
            yield
    finally:
        handle.remove()
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


class SaliencyTail(torch.nn.Module):
    """The network after its saliency layer (``network.saliency_tail(layer)``), with an identity ``layer`` in front on
    which MONAI's CAMs place their hooks: fed the layer's activations (from ONNX Runtime), it gives the logits, and
    MONAI's Grad-CAM / Grad-CAM++ on it give the network's maps at the cost of the tail's backward pass."""

    def __init__(self, tail: torch.nn.Module) -> None:
        super().__init__()
        self.layer, self.tail = torch.nn.Identity(), tail

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.tail(self.layer(activations))


def saliency_tail(network: torch.nn.Module, layer: str) -> SaliencyTail | None:
    """:class:`SaliencyTail` of ``network`` after ``layer``, when the network declares one (``saliency_tail``)."""
    declare = getattr(network, "saliency_tail", None)
    tail = declare(layer) if callable(declare) else None
    return SaliencyTail(tail).train(network.training) if isinstance(tail, torch.nn.Module) else None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "image"


def output_name(filename: str, taken: set[str]) -> str:
    """A file-name-safe name for one input's output files, from its *whole* name, unique within a run.

    The extension stays (``UPPER_EXT.PNG`` -> ``UPPER_EXT.PNG``, beside ``UPPER_EXT.dcm``), and so does
    every dot of a UID-named DICOM (``1.2.840.113619.2.55.3.1`` and ``...3.2`` stay apart); characters
    other than letters, digits, ``_ . -`` become ``_``. An input whose name was taken already (the same
    file name in another folder) gets ``_2``, ``_3`` ...; names are compared without case, so they also
    stay apart on case-insensitive file systems. ``taken`` holds the run's names so far (lower case).
    """
    base = _safe(Path(str(filename)).name)
    name, count = base, 1
    while name.lower() in taken:
        count += 1
        name = f"{base}_{count}"
    taken.add(name.lower())
    return name


def class_tokens(class_names: list[str]) -> list[str]:
    """File-name-safe class names, made unique (``"A B"`` and ``"A_B"`` would both be ``A_B``)."""
    tokens: list[str] = []
    for index, name in enumerate(class_names):
        token = _safe(str(name))
        tokens.append(token if token.lower() not in {t.lower() for t in tokens} else f"{token}_{index}")
    return tokens


def write_overlay(path: str | os.PathLike, image: torch.Tensor, saliency: torch.Tensor) -> None:
    """PNG of a map over its image: jet colours blended in proportion to the map (``1 x H x W``, in [0, 1])."""
    blended = blend_images(image, saliency, alpha=0.5 * saliency, cmap="jet", transparent_background=False)
    rgb = (np.clip(np.asarray(blended), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(rgb).save(path)


def read_original(filename: str | os.PathLike | None) -> np.ndarray | None:
    """The radiograph behind an inference input, ``(H, W)`` in [0, 1] as the bundle reads it, for the
    overlay; None when it cannot be read again (no file name, or the file changed). The input was
    accepted once already, so the chest check and its warnings are not repeated."""
    if not filename or not Path(str(filename)).is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_cxr(filename, require_chest=False)
    except CXRDataError:
        return None


class SaliencyWriter:
    """Write Grad-CAM (or Grad-CAM++) maps and overlays for every readable input of an inference run.

    Args:
        network: the CNN being run.
        target_layer: name of the module whose activations and gradients make the map.
        output_dir: the maps go to ``<output_dir>/saliency``.
        class_names: class names (used in file names).
        task: ``"multilabel"`` or ``"multiclass"``.
        method: ``"gradcam"`` or ``"gradcampp"``.
        threshold, max_classes: which classes to explain (see :func:`saliency_targets`); ``threshold`` one
            number, or per class as :class:`~bundle.handlers.PredictionWriter` takes it.
        overlay: also write the PNG overlay (on the radiograph read again at full resolution).
        enabled: False: attach nothing and place no hooks (``--saliency_enabled False``).
        predictor: what predicts in the evaluator (``@predictor``); an ONNX Runtime one whose model gives the
            saliency activations keeps each batch's, and the maps come from them through the tail.
    """

    def __init__(self, network: torch.nn.Module, target_layer: str, output_dir: str | os.PathLike,
                 class_names: list[str], task: str = "multilabel", method: str = "gradcam",
                 threshold: float | Sequence[float] | Mapping[str, float] = 0.5, max_classes: int = 3, overlay: bool = True, filename_key: str = "filename",
                 error_key: str = "error", enabled: bool = True, predictor: torch.nn.Module | None = None) -> None:
        self.enabled = as_flag(enabled)
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        names = {name for name, _ in network.named_modules()}
        if self.enabled and target_layer not in names:  # disabled: another network needs no saliency layer
            raise ValueError(f"{type(network).__name__} has no module {target_layer!r} for saliency")
        self.cam = make_cam(method, network, target_layer) if self.enabled else None
        tail = saliency_tail(network, target_layer) if self.enabled else None
        self.tail_cam = make_cam(method, tail, "layer") if tail is not None else None  # for ONNX Runtime's activations
        self._fallback_said = False
        self._tail_mismatch: weakref.WeakSet = weakref.WeakSet()  # predictors whose logits the tail does not give
        # the evaluator's predictor (configs/inference.json's @predictor): an ONNX Runtime one keeps each batch's
        # saliency activations, from which __call__ maps through the tail
        self.predictor = predictor if predictor is not network and self.tail_cam is not None else None
        if self.predictor is not None and hasattr(self.predictor, "keep_activations"):
            self.predictor.keep_activations = True
        self.network, self.target_layer = network, target_layer
        self.output_dir = Path(output_dir) / "saliency"
        self.class_names, self.task, self.max_classes = list(class_names), task, max_classes
        self.threshold = class_thresholds(threshold, self.class_names)  # one per class
        self.overlay, self.filename_key, self.error_key = overlay, filename_key, error_key
        self.written: list[Path] = []
        self.maps: list[dict[str, str]] = []  # one row per input and explained class: image, class, map, overlay
        self._names: set[str] = set()
        self._class_tokens = class_tokens(self.class_names)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self._start)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
            engine.add_event_handler(Events.COMPLETED, self.write_index)

    def _start(self, engine: Engine | None = None) -> None:
        self._names.clear()
        self.maps.clear()

    def write_index(self, engine: Engine | None = None) -> Path | None:
        """``saliency/maps.csv``: which input and class each map and overlay belongs to (atomic)."""
        from .metrics_writer import write_text_atomic

        if not self.maps:
            return None
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["image", "class", "map", "overlay"])
        writer.writeheader()
        writer.writerows(self.maps)
        path = self.output_dir / "maps.csv"
        write_text_atomic(path, buffer.getvalue())
        return path

    def __call__(self, engine: Engine) -> None:
        keep = [i for i, sample in enumerate(engine.state.batch) if not sample.get(self.error_key)]
        if not keep:
            return
        outputs = [engine.state.output[i] for i in keep]
        images = torch.stack([torch.as_tensor(o["image"]) for o in outputs]).to(engine.state.device)
        probabilities = torch.stack([torch.as_tensor(o["pred"]).reshape(-1) for o in outputs]).float().cpu()
        maps = self._maps_from_predictor(images, keep, probabilities)
        if maps is None:
            _, maps = self.explain(images, probabilities)
        inputs = [str(engine.state.batch[i].get(self.filename_key, f"image{i}")) for i in keep]
        names = [output_name(filename, self._names) for filename in inputs]
        originals = [read_original(engine.state.batch[i].get(self.filename_key)) if self.overlay else None
                     for i in keep]
        written = self.write(names, images, maps, originals=originals, probabilities=probabilities)
        for filename, per_class in zip(inputs, written):
            for k, files in per_class.items():
                self.maps.append({Keys.IMAGE: filename, "class": self.class_names[k], "map": files[0].name,
                                  "overlay": files[1].name if len(files) > 1 else ""})

    def explain(self, images: torch.Tensor, probabilities: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, list[dict[int, torch.Tensor]]]:
        """Maps of the classes to explain for a batch: ``(logits, [{class index: 1 x H x W map}])``.

        With ``probabilities`` (the evaluator already predicted), each explained class costs a
        forward pass from the input and a backward pass from the saliency layer on; ``logits`` is None.
        Without them, the prediction comes out of the first Grad-CAM pass (for every image its
        top class, the first one :func:`saliency_targets` picks): one forward pass for the
        prediction and the top-class map together, which is what a single-image, real-time path
        wants (the deploy app; ``scripts/benchmark_speed.py``'s end-to-end latency). The logits
        are the network's in eval mode, as under ``no_grad``.
        """
        if self.cam is None:
            raise RuntimeError("saliency is disabled (enabled=False)")
        logits, maps = None, {}
        # evaluators run under no_grad; Grad-CAM needs gradients (from its layer on)
        with torch.enable_grad(), gradients_from_layer(self.network, self.target_layer):
            if probabilities is None:
                captured: list[torch.Tensor] = []
                handle = self.network.register_forward_hook(lambda m, i, out: captured.append(out))
                try:
                    top_maps = self.cam(images).detach().float().cpu()  # arg-max class per image
                finally:
                    handle.remove()
                logits = captured[-1].detach()
                probabilities = torch.from_numpy(task_probabilities(logits.cpu(), self.task))
            targets = saliency_targets(probabilities, self.task, self.threshold, self.max_classes,
                                       ranking=None if logits is None else logits.float().cpu())
            if logits is not None:
                top = logits.argmax(1).tolist()
                maps = {(row, top[row]): top_maps[row] for row in range(len(top))}
            for k in sorted({k for t in targets for k in t}):
                if all((row, k) in maps for row, wanted in enumerate(targets) if k in wanted):
                    continue
                class_maps = self.cam(images, class_idx=k).detach().float().cpu()
                maps.update({(row, k): class_maps[row] for row, wanted in enumerate(targets) if k in wanted})
        return logits, [{k: maps[(row, k)] for k in wanted} for row, wanted in enumerate(targets)]

    def explain_onnx(self, predictor: torch.nn.Module, images: torch.Tensor, probabilities: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, list[dict[int, torch.Tensor]]]:
        """Predict with ``predictor`` (an :class:`~bundle.runtime.OnnxRuntimeNetwork`) and map the classes to explain:
        ``(logits, [{class index: 1 x H x W map}])``, as :meth:`explain` gives them.

        Where the ONNX model gives the saliency layer's activations and the network declares its tail after that
        layer, one ONNX Runtime run gives the logits and the activations, and each explained class costs a
        backward pass through the PyTorch tail only (MONAI's Grad-CAM / Grad-CAM++ on :class:`SaliencyTail`: the
        same weights, upsampler and normaliser, so the same maps as the PyTorch backend's). Otherwise (or when
        the tail's logits do not match ONNX Runtime's) the maps come from the whole PyTorch network (said once
        in the log). ``probabilities``: the classes to explain are chosen from them instead of the logits.
        """
        if self.cam is None:
            raise RuntimeError("saliency is disabled (enabled=False)")
        activations = None
        with torch.no_grad():
            if self.tail_cam is not None and predictor not in self._tail_mismatch and \
                    callable(getattr(predictor, "predict_with_activations", None)):
                logits, activations = predictor.predict_with_activations(images)
            else:
                logits = predictor(images)
        logits = logits.float()
        if probabilities is None:
            probabilities = torch.from_numpy(task_probabilities(logits.cpu(), self.task))
        maps = self._maps_from_activations(images, activations, logits, probabilities) if activations is not None \
            else None
        if maps is None:
            if activations is not None:  # e.g. an int8 model: its logits are not the fp32 tail's; not asked again
                self._tail_mismatch.add(predictor)
            if not self._fallback_said:
                self._fallback_said = True
                why = (f"{type(self.network).__name__} declares no tail after {self.target_layer!r}"
                       if self.tail_cam is None else
                       "the PyTorch tail's logits differ from the ONNX model's (an int8 model's do)"
                       if predictor in self._tail_mismatch else
                       "the ONNX model has no saliency_activations output (export it again with this version)")
                logger.info("Grad-CAM maps from the PyTorch network (a forward and a backward pass per class): %s", why)
            maps = self.explain(images, probabilities.float().cpu())[1]
        return logits, maps

    def _maps_from_predictor(self, images: torch.Tensor, keep: list[int], probabilities: torch.Tensor
                             ) -> list[dict[int, torch.Tensor]] | None:
        """Maps from the activations the ONNX Runtime predictor kept for this batch (rows ``keep``); None where it
        kept none for these images, or the tail does not give its logits (then the whole network maps)."""
        kept = getattr(self.predictor, "last_activations", None) if self.predictor is not None else None
        if kept is None or self.predictor in self._tail_mismatch:
            return None
        batch, logits, activations = kept
        rows = torch.as_tensor(keep, device=batch.device)
        if len(batch) <= max(keep) or not torch.equal(torch.as_tensor(batch.index_select(0, rows)).float(),
                                                      torch.as_tensor(images).to(batch.device).float()):
            return None
        maps = self._maps_from_activations(images, activations.index_select(0, rows.to(activations.device)),
                                           logits.index_select(0, rows.to(logits.device)).float(), probabilities)
        if maps is None:
            self._tail_mismatch.add(self.predictor)
            self.predictor.keep_activations = False
            logger.info("Grad-CAM maps from the PyTorch network (a forward and a backward pass per class): the PyTorch "
                        "tail's logits differ from the ONNX model's (an int8 model's do)")
        return maps

    def _maps_from_activations(self, images: torch.Tensor, activations: torch.Tensor, logits: torch.Tensor,
                               probabilities: torch.Tensor) -> list[dict[int, torch.Tensor]] | None:
        """Maps from the saliency layer's ``activations``; None when the tail does not reproduce ``logits``."""
        cam = self.tail_cam
        tail = cam.nn_module.model
        targets = saliency_targets(probabilities.float().cpu(), self.task, self.threshold, self.max_classes,
                                   ranking=logits.cpu())
        captured: list[torch.Tensor] = []
        handle = tail.register_forward_hook(lambda m, i, out: captured.append(out.detach()))
        maps = {}
        try:
            with torch.enable_grad(), gradients_from_layer(tail, "layer"):
                for k in sorted({k for t in targets for k in t}):
                    # MONAI's own map (weights, weighted sum, ReLU), upsampler and normaliser, as GradCAM.__call__
                    acti_map = cam.compute_map(activations, class_idx=k)
                    class_maps = cam.postprocessing(cam.upsampler(images.shape[2:])(acti_map)).detach().float().cpu()
                    maps.update({(row, k): class_maps[row] for row, wanted in enumerate(targets) if k in wanted})
        finally:
            handle.remove()
        if captured:
            # the tail must be the network's: its logits are ONNX Runtime's (fp32: 1e-4; int8 models differ more)
            difference = float((captured[0].float() - logits.to(captured[0].device)).abs().max())
            if not difference <= TAIL_TOLERANCE * max(1.0, float(logits.abs().max())):
                return None
        return [{k: maps[(row, k)] for k in wanted} for row, wanted in enumerate(targets)]

    def write(self, names: list[str], images: torch.Tensor, maps: list[dict[int, torch.Tensor]],
              output_dir: str | os.PathLike | None = None, originals: list[np.ndarray | None] | None = None,
              probabilities: torch.Tensor | None = None) -> list[dict[int, list[Path]]]:
        """Write each image's maps (``<name>_<class>.npy``) and overlays (``.png``) under ``output_dir``
        (default: the writer's ``<output_dir>/saliency``); ``names`` as :func:`output_name` makes them.
        Returns, per image, ``{class index: [files]}``: one distinct pair of files per explained class.

        ``originals``: per image, the radiograph as read, ``(H, W)`` in [0, 1], on which its overlays are
        drawn (None, or a None entry: on the network input ``images[row]``). ``probabilities``: ``(B, C)``,
        each overlay's class probability for its corner label.
        """
        folder = Path(output_dir) if output_dir is not None else self.output_dir
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for row, (name, image_maps) in enumerate(zip(names, maps)):
            original = originals[row] if originals is not None else None
            background = images[row].detach().float().cpu().numpy() if original is None else original
            files = {}
            for k, saliency in image_maps.items():
                label = self.class_names[k]
                if probabilities is not None:
                    label += f"  p = {float(probabilities[row][k]):.2f}"
                files[k] = self._write(folder, f"{name}_{self._class_tokens[k]}", background, saliency, label)
            written.append(files)
        return written

    def _write(self, folder: Path, base: str, background: np.ndarray, saliency: torch.Tensor, label: str) -> list[Path]:
        # the suffix is appended, never substituted: Path.with_suffix would cut a name at its last dot
        files = [folder / f"{base}.npy"]
        np.save(files[0], saliency[0].numpy().astype(np.float32))
        if self.overlay:
            files.append(folder / f"{base}.png")
            what = "Grad-CAM++" if isinstance(self.cam, GradCAMpp) else "Grad-CAM"
            save_figure(saliency_overlay(background, saliency[0].numpy(), label, colorbar_label=what), files[1])
        self.written.extend(files)
        return files
