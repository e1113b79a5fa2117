"""Every network of the bundle, where it is configured, and what it costs at the size it runs at.

One entry per network: the stage config that trains it (its ``network_def`` and
``image_size`` are read from there, so the report follows the configs) and the module
Grad-CAM explains. ``scripts/benchmark_speed.py`` measures every entry, and
:func:`profile_networks` / :func:`profile_table` give the parameters-and-FLOPs report::

    >>> from bundle.networks.registry import profile_networks, profile_table
    >>> print(profile_table(profile_networks()))          # doctest: +SKIP

Adding a network (e.g. a ViT stage) is one :func:`register_network` call (or one more
entry in ``NETWORKS``) naming its stage config and Grad-CAM layer.

Networks are built from the stage configs with MONAI's ``ConfigParser``; the data
block is replaced by a fixed class count, so nothing is read or generated.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .profile import count_flops, count_parameters

from ..stages import stage_configs

__all__ = ["NetworkEntry", "NETWORKS", "register_network", "build_network", "profile_networks", "profile_table",
           "default_bundle_root"]


@dataclass(frozen=True)
class NetworkEntry:
    """A network of the bundle.

    Args:
        name: its key (for a stage's own network, the stage name and key in ``configs/student.json#networks``).
        stage: the stage that trains it (:data:`bundle.stages.STAGES`: its config files).
        saliency_layer: the module Grad-CAM explains (its last convolutional stage).
        description: one line for reports.
        overrides: config ids to set when building it (e.g. another ``teacher_members``).
    """

    name: str
    stage: str
    saliency_layer: str | None
    description: str
    overrides: Mapping[str, Any] | None = None

    @property
    def config(self) -> str:
        """The stage's own config file (its overlay; ``configs/student.json`` for the student)."""
        return stage_configs(self.stage)[-1]


NETWORKS: dict[str, NetworkEntry] = {
    entry.name: entry
    for entry in (
        NetworkEntry("teacher", "teacher", "members.0._conv_head",
                     "TAKD teacher: EfficientNet-B0 + B1 ensemble (MONAI)"),
        NetworkEntry("teacher_paper", "teacher", "members.0._conv_head",
                     "TAKD teacher as in the paper: EfficientNet-B6 + B7 ensemble (--teacher_members)",
                     overrides={"teacher_members": ["efficientnet-b6", "efficientnet-b7"]}),
        NetworkEntry("assistant", "assistant", "features.denseblock4",
                     "TAKD assistant: DenseNet121 (MONAI)"),
        NetworkEntry("student", "student", "conv3",
                     "TAKD student: 3-conv student"),
        NetworkEntry("densenet161", "densenet161", "features.denseblock4",
                     "compact path teacher: DenseNet161 (MONAI DenseNet)"),
        NetworkEntry("compact_student", "compact_student", "head",
                     "compact real-time student: MobileNetV3-Large 0.75"),
    )
}


def register_network(entry: NetworkEntry) -> NetworkEntry:
    """Add (or replace) an entry of :data:`NETWORKS`."""
    NETWORKS[entry.name] = entry
    return entry


def default_bundle_root() -> Path:
    """The folder holding ``configs/``: this checkout's root, else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "configs").is_dir() else Path.cwd()


@contextlib.contextmanager
def _working_directory(path: str | os.PathLike) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)  # config paths and macros ("%configs/student.json#...") resolve against the working directory
    try:
        yield
    finally:
        os.chdir(previous)


def build_network(name: str, num_classes: int = 14, image_size: int | None = None,
                  bundle_root: str | os.PathLike | None = None,
                  overrides: Mapping[str, Any] | None = None) -> tuple[nn.Module, int]:
    """The network ``name`` as its stage config builds it (on the CPU), and the image size it runs at.

    ``image_size`` replaces the config's; ``overrides`` are further config ids.
    """
    from monai.bundle import ConfigParser

    if name not in NETWORKS:
        raise KeyError(f"unknown network {name!r}; known: {sorted(NETWORKS)}")
    entry = NETWORKS[name]
    with _working_directory(bundle_root or default_bundle_root()):
        parser = ConfigParser()
        parser.read_config(stage_configs(entry.stage))
        parser.update({**dict(entry.overrides or {}), **dict(overrides or {}), "device": "$torch.device('cpu')",
                       "data": {"num_classes": int(num_classes), "task": "multilabel"}})
        size = int(image_size if image_size is not None else parser.get_parsed_content("image_size"))
        network = parser.get_parsed_content("network_def")
    return network, size


def profile_networks(names: Sequence[str] | None = None, num_classes: int = 14,
                     image_size: int | None = None, in_channels: int = 1,
                     bundle_root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Parameters and FLOPs (PyTorch's counter, 2 per multiply-add) of each network at its image size."""
    rows = []
    for name in names or list(NETWORKS):
        network, size = build_network(name, num_classes, image_size, bundle_root)
        flops = count_flops(network, (in_channels, size, size))
        rows.append({"name": name, "description": NETWORKS[name].description, "network": type(network).__name__,
                     "config": NETWORKS[name].config, "image_size": size, "num_classes": num_classes,
                     "parameters": count_parameters(network), "gflops": flops / 1e9, "gmacs": flops / 2e9})
    return rows


def profile_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`profile_networks` rows."""
    lines = ["| network | stage config | image size | parameters | GFLOPs | G multiply-adds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['description']} | `{r['config']}` | {r['image_size']} px | {r['parameters']:,} "
                     f"| {r['gflops']:.3f} | {r['gmacs']:.3f} |")
    return "\n".join(lines)
