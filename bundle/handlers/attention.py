"""Attention saliency of a ViT's decisions, written beside the predictions (MLCAK's explanations).

For every readable input of an inference run, the network's mean attention map
(:meth:`bundle.networks.CXRViT.attention_map`: the class token's attention to the patches,
averaged over heads and ``layers``, ``"all"`` by default) is upsampled to the network's input
size (bilinear, between patch centres) and written under ``<output_dir>/saliency/``:

* ``<input name>_attention.npy``: the raw map, float32, ``(H, W)`` at the input size; each
  pixel holds the attention of the patch around it (the patch-grid map sums to 1, so a
  uniform map is ``1 / g^2``; no rescaling, so maps of different images and models compare);
* ``<input name>_attention.png``: the map, min-max scaled to [0, 1], over the image (jet
  colours, as the Grad-CAM overlays of :class:`~bundle.handlers.SaliencyWriter`).

The map does not depend on a class: a ViT has one class token for all outputs. The network
runs once more on the batch to record it (the evaluator's own pass may have been in another
precision); the cost is one forward pass.

Config example (``configs/vit_inference.json``, in the inference handlers)::

    {"_target_": "bundle.handlers.AttentionMapWriter", "network": "@network", "output_dir": "@output_dir",
     "layers": "all"}
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms.utils import rescale_array

from ..distributed import unwrap
from .saliency import output_name, write_overlay

__all__ = ["AttentionMapWriter"]


class AttentionMapWriter:
    """Write each input's attention map (``.npy``, raw) and overlay (``.png``) during an inference run.

    Args:
        network: a :class:`~bundle.networks.CXRViT` (or anything with ``explain(images, layers)``).
        output_dir: the maps go to ``<output_dir>/saliency``.
        layers: ``"all"`` (MLCAK: mean over every layer), ``"last"``, or layer indices.
        overlay: also write the PNG overlay.
        enabled: False: attach nothing (``--saliency_enabled False``).
    """

    def __init__(self, network: torch.nn.Module, output_dir: str | os.PathLike, layers: str | list[int] = "all",
                 overlay: bool = True, filename_key: str = "filename", error_key: str = "error",
                 enabled: bool = True) -> None:
        if not hasattr(unwrap(network), "explain"):
            raise ValueError(f"{type(unwrap(network)).__name__} has no attention maps (explain()); attention saliency "
                             f"needs bundle.networks.CXRViT (use bundle.handlers.SaliencyWriter for CNNs)")
        self.network, self.layers, self.enabled = network, layers, bool(enabled)
        self.output_dir = Path(output_dir) / "saliency"
        self.overlay, self.filename_key, self.error_key = overlay, filename_key, error_key
        self.written: list[Path] = []
        self._names: set[str] = set()

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, lambda _: self._names.clear())
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        keep = [i for i, sample in enumerate(engine.state.batch) if not sample.get(self.error_key)]
        if not keep:
            return
        images = torch.stack([torch.as_tensor(engine.state.output[i]["image"]) for i in keep]).float()
        _, maps = unwrap(self.network).explain(images.to(engine.state.device), self.layers)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for row, i in enumerate(keep):
            name = output_name(str(engine.state.batch[i].get(self.filename_key, f"image{i}")), self._names)
            base = self.output_dir / f"{name}_attention"  # suffixes appended: the name keeps every dot
            saliency = maps[row].detach().float().cpu()
            np.save(f"{base}.npy", saliency.numpy().astype(np.float32))
            self.written.append(Path(f"{base}.npy"))
            if self.overlay:
                write_overlay(f"{base}.png", images[row].cpu(), rescale_array(saliency)[None])
                self.written.append(Path(f"{base}.png"))
