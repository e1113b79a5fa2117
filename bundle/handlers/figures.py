"""Pictures of an evaluation: PNGs at the end of a test evaluation, TensorBoard images during training.

* :class:`EvaluationFigures` (``configs/evaluate.json``): ``roc.png``, ``precision_recall.png``,
  ``confusion_matrix.png`` (multi-class) or ``confusion_tables.png`` (multi-label) and
  ``reliability.png`` under ``<output_dir>/eval/`` (:func:`bundle.figures.write_evaluation_figures`);
  a two-head ViT gets each twice, ``mlct_*`` (findings) and ``mcct_*`` (normal / abnormal).
* :class:`ValidationFigures` (``configs/common.json``, on the validator): every epoch, the first
  ``num_images`` validation images with the saliency of their top class (Grad-CAM, or a ViT's mean
  attention) under ``validation/saliency``; and the ROC curves at every epoch whose key metric is
  the best so far (the epoch ``model.pt`` comes from) under ``validation/roc``.

Both read the evaluation from :class:`~bundle.metrics.ClassificationMetrics` (the evaluator's key
metric, which leaves itself in ``engine.state.classification_metric``), after it has computed.

Config examples::

    {"_target_": "bundle.handlers.EvaluationFigures", "output_dir": "@eval_dir", "title": "test split"}
    {"_target_": "bundle.handlers.ValidationFigures", "summary_writer": "@tensorboard_writer"}
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..distributed import unwrap
from ..figures import EvaluationData, figure_to_rgb, roc_figure, saliency_panels_figure, write_evaluation_figures
from ..keys import Keys
from ..metrics import MultiTaskMetrics
from ..metrics import probabilities as task_probabilities
from ..networks.hooks import hookless_copy
from .saliency import gradients_from_layer, make_cam, unit_range

__all__ = ["EvaluationFigures", "ValidationFigures", "default_saliency_layer"]

logger = logging.getLogger(__name__)


def _metric(engine: Engine) -> Any:
    metric = getattr(engine.state, "classification_metric", None)
    if metric is None:
        raise RuntimeError("figures of an evaluation need bundle.metrics.ClassificationMetrics (or MultiTaskMetrics) "
                           "as the evaluator's key metric")
    return metric


class EvaluationFigures:
    """At the end of an evaluation, write its ROC, precision-recall, confusion and reliability PNGs.

    Args:
        output_dir: the folder of the PNGs (``configs/evaluate.json``: ``<output_dir>/eval``).
        title: what the figures' titles name (e.g. ``"test split"``).
    """

    def __init__(self, output_dir: str | os.PathLike, title: str = "") -> None:
        self.output_dir, self.title = Path(output_dir), title
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.written = [path for prefix, data in EvaluationData.from_metric(_metric(engine), self.title)
                        for path in write_evaluation_figures(data, self.output_dir, prefix)]
        logger.info("figures: %s", ", ".join(str(path) for path in self.written))


def default_saliency_layer(network: torch.nn.Module) -> str | None:
    """The Grad-CAM layer of a bundle network (``bundle.networks.NETWORKS``), found by its module names."""
    from ..networks.registry import NETWORKS

    names = {name for name, _ in unwrap(network).named_modules()}
    return next((entry.saliency_layer for entry in NETWORKS.values() if entry.saliency_layer in names), None)


class ValidationFigures:
    """TensorBoard images of each validation: saliency of a few images, and the ROC curves of the best epochs.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        num_images: how many of the first validation images to show (the same ones every epoch).
        target_layer: the Grad-CAM layer; None: the bundle network's own (:func:`default_saliency_layer`).
            A network with ``explain`` (``bundle.networks.CXRViT``) shows its mean attention instead.
        method: ``"gradcam"`` or ``"gradcampp"``.
        tag: the TensorBoard tag prefix.

    The maps come from a copy of the network (so no hook stays on the trained one): one forward and
    one backward pass over ``num_images`` images per epoch.
    """

    def __init__(self, summary_writer: Any, num_images: int = 4, target_layer: str | None = None,
                 method: str = "gradcam", tag: str = "validation") -> None:
        self.writer, self.num_images, self.target_layer = summary_writer, int(num_images), target_layer
        self.method, self.tag = method, tag
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._images, self._labels, self._masks, self._logits = [], [], [], []

    def _collect(self, engine: Engine) -> None:
        if len(self._images) >= self.num_images or self.num_images <= 0:
            return
        output = engine.state.output
        samples = output if isinstance(output, list) else [
            {key: value[i] for key, value in output.items() if isinstance(value, torch.Tensor) and value.ndim}
            for i in range(len(output[Keys.PRED]))]
        for sample in samples[: self.num_images - len(self._images)]:
            self._images.append(torch.as_tensor(sample[Keys.IMAGE]).detach().float().cpu())
            self._logits.append(torch.as_tensor(sample[Keys.PRED]).detach().float().cpu())
            label = torch.as_tensor(sample[Keys.LABEL]).detach().float().cpu()
            self._labels.append(label)
            self._masks.append(torch.as_tensor(sample.get(Keys.LABEL_MASK, torch.ones_like(label))).float().cpu())

    def __call__(self, engine: Engine) -> None:
        metric = _metric(engine)
        step = int(engine.state.epoch)
        if self._images:
            figure = self._saliency_figure(engine, metric, step)
            if figure is not None:
                self.writer.add_image(f"{self.tag}/saliency", figure_to_rgb(figure), step, dataformats="HWC")
        if getattr(engine.state, "best_metric_epoch", None) == step:
            for prefix, data in EvaluationData.from_metric(metric, f"validation, epoch {step}"):
                self.writer.add_image(f"{self.tag}/{prefix}roc", figure_to_rgb(roc_figure(data)), step, dataformats="HWC")
        self.writer.flush()

    def _maps(self, network: torch.nn.Module, images: torch.Tensor, device: torch.device) -> tuple[list, str] | None:
        plain = unwrap(network)
        if hasattr(plain, "explain"):  # CXRViT: one attention map for all classes
            with torch.no_grad():
                _, maps = plain.explain(images.to(device), "all")
            return [unit_range(m.detach().float().cpu().reshape(1, 1, *m.shape[-2:]))[0, 0] for m in maps], "attention"
        layer = self.target_layer or default_saliency_layer(plain)
        if layer is None:
            return None
        duplicate = hookless_copy(plain).eval()  # MONAI's CAMs hook the module they are given for good
        cam = make_cam(self.method, duplicate, layer)
        with torch.enable_grad(), gradients_from_layer(duplicate, layer):
            maps = cam(images.to(device)).detach().float().cpu()  # each image's top class
        return [m[0] for m in maps], f"{'Grad-CAM++' if self.method == 'gradcampp' else 'Grad-CAM'} of the top class"

    def _saliency_figure(self, engine: Engine, metric: Any, step: int) -> Any:
        images = torch.stack(self._images)
        logits, labels, masks = torch.stack(self._logits), torch.stack(self._labels), torch.stack(self._masks)
        if isinstance(metric, MultiTaskMetrics):  # the findings head of a two-head ViT
            layout = metric.layout
            findings, _ = layout.split(logits)
            probs, names = torch.sigmoid(findings).numpy(), list(layout.finding_names)
            truth, known = (t.numpy() for t in layout.targets(labels, masks)[:2])
        else:
            probs, names = task_probabilities(logits, metric.task), list(metric.class_names)
            truth, known = labels.numpy(), masks.numpy()
        explained = self._maps(engine.network, images, engine.state.device)
        if explained is None:
            return None
        maps, what = explained
        titles = []
        for row in range(len(images)):
            top = int(np.argmax(probs[row]))
            present = [n for n, t, k in zip(names, truth[row], known[row]) if t > 0.5 and k > 0]
            flat = " (map flat: no evidence)" if float(maps[row].max()) <= 0 else ""
            titles.append(f"true: {', '.join(present) or 'no finding'}\ntop: {names[top]} {probs[row][top]:.2f}{flat}")
        return saliency_panels_figure([image.numpy() for image in images], [m.numpy() for m in maps], titles,
                                      f"validation, epoch {step}: {what}")
