"""Teacher-output cache: a teacher's logits and hooked features, by sample, computed once or recorded.

A frozen teacher is a fixed function of its input, so when the input is fixed too
its outputs need computing only once. :class:`TeacherOutputCache` runs the teacher
over the training set under the *evaluation* (deterministic) preprocessing at the
teacher's input size (``configs/student.json#preprocessing#teacher_eval``), keeps
its logits and the feature maps of the hooked modules, and the
:class:`~bundle.distill.Distiller` then looks them up by each sample's position in
the training list (``sample_index``) instead of running the teacher every epoch.

Interaction with augmentation. The cached targets are those of the *unaugmented*
image, while the student sees the augmented one. Without augmentation
(``--augment False``) the cached loss equals the online loss exactly
(tested). With augmentation the student is asked to match, on a shifted or rotated
image, the teacher's answer for the original: logits are nearly invariant to the mild
augmentation used here, but feature maps are spatial and are then compared with a
misaligned target. Use the cache with augmentation off when the feature term
matters, or accept the approximation for speed (Beyer et al., "Knowledge
distillation: a good teacher is patient and consistent", CVPR 2022, measure that
inconsistent teacher targets cost accuracy).

Storage: ``"memory"`` (tensors in RAM) or ``"disk"`` (``.npy`` files opened as
memory maps, so data sets larger than RAM work, and a rerun or a resumed run reuses
them). A disk cache lives in a folder named by a fingerprint of the teacher's
weights, the hooked module names and the training records; it is written to a
temporary folder and renamed when complete, so a crash never leaves a half cache
that looks whole. Size: ``N x (K + sum_k C_k H_k W_k)`` numbers, e.g. DenseNet121's
three blocks at 32 px are 28,672 per image (115 kB in float32, 57 kB in float16).

Config (stage configs): ``"teacher_cache": "memory"`` (or ``"disk"``, or null for the
online teacher); ``"teacher_cache_dtype": "float16"`` halves the size.

A recorded teacher is a cache that came from outside: :meth:`TeacherOutputCache.from_predictions`
reads a predictions file (an image-id column and one probability or logit column per class;
:mod:`bundle.distill.recorded`) into the same structure, logits only, with ``available`` marking
the training samples the file has a row for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..distributed import barrier, rank
from ..keys import Keys
from .features import FeatureHooks
from .recorded import read_teacher_predictions
from .teachers import TeacherOutput

__all__ = ["TeacherOutputCache", "with_sample_index"]

SAMPLE_INDEX = Keys.SAMPLE_INDEX
STORAGES = ("memory", "disk")
logger = logging.getLogger(__name__)


def with_sample_index(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``records``, each with its position as ``sample_index`` (the cache's key)."""
    return [{**record, SAMPLE_INDEX: index} for index, record in enumerate(records)]


def _fingerprint(teacher: nn.Module, module_names: Sequence[str], records: Iterable[Mapping[str, Any]],
                 dtype: torch.dtype) -> str:
    """Hash of what the cached values depend on: teacher weights, hooked names, the records, the dtype."""
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(list(module_names)).encode())
    digest.update(str(dtype).encode())
    for record in records:
        image = record.get("image")
        digest.update(image.tobytes() if isinstance(image, np.ndarray) else str(image).encode())
    return digest.hexdigest()[:16]


class TeacherOutputCache:
    """Logits ``(N, K)`` and feature maps ``{name: (N, C, H, W)}`` of a teacher, by sample index.

    Build it with :meth:`compute` (from a frozen network) or :meth:`from_predictions` (from a
    recorded file); a distiller reads it with :meth:`outputs` (a teacher source, see
    :mod:`bundle.distill.teachers`), tests and tools with :meth:`lookup`.

    Args:
        logits: one row per training sample.
        features: maps per hooked module name, one per sample.
        location: the folder of a disk cache.
        available: ``(N,)`` booleans, False for samples the teacher has no answer for (a recorded
            file without their rows, under ``missing="skip"``); None: every sample has one.
        source: where the outputs came from, for messages.
    """

    def __init__(self, logits: torch.Tensor | np.ndarray, features: Mapping[str, torch.Tensor | np.ndarray],
                 location: Path | None = None, available: np.ndarray | None = None, source: str = "teacher cache") -> None:
        self.logits = logits
        self.features = dict(features)
        self.location = location
        self.available = None if available is None or bool(np.all(available)) else torch.as_tensor(available, dtype=torch.bool)
        self.source = source

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def feature_names(self) -> frozenset[str]:
        return frozenset(self.features)

    def feature_shapes(self, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
        return {name: tuple(int(v) for v in self.features[name].shape[1:]) for name in names}

    def outputs(self, batch: Mapping[str, Any]) -> TeacherOutput:
        """The cached outputs of a batch's samples, found by its ``sample_index``."""
        index = batch.get(Keys.SAMPLE_INDEX)
        if index is None:
            raise ValueError(f"the {self.source} needs each batch's 'sample_index' "
                             "(train#dataset data: bundle.distill.with_sample_index(...))")
        device = batch[Keys.IMAGE].device
        logits, features = self.lookup(index, device)
        mask = None
        if self.available is not None:
            mask = self.available[torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()].to(device, torch.float32)
        return TeacherOutput(logits, features, mask)

    @classmethod
    def from_predictions(cls, path: str | os.PathLike, records: Sequence[Mapping[str, Any]], class_names: Sequence[str],
                         task: str, values: str = "auto", missing: str = "error",
                         dataset_dir: str | os.PathLike | None = None) -> TeacherOutputCache:
        """A recorded teacher: the logits of ``records`` (the training list) read from a predictions file.

        See :func:`bundle.distill.recorded.read_teacher_predictions` for the file format, how rows
        are matched to records and columns to classes, ``values`` and ``missing``.
        """
        logits, available = read_teacher_predictions(path, records, class_names, task, values=values,
                                                     missing=missing, dataset_dir=dataset_dir)
        cache = cls(logits, {}, available=available, source=f"recorded teacher {path}")
        logger.info("recorded teacher %s: logits for %d of %d training images", path, int(available.sum()),
                    len(available))
        return cache

    @property
    def nbytes(self) -> int:
        arrays = [self.logits, *self.features.values()]
        return int(sum(a.element_size() * a.nelement() if isinstance(a, torch.Tensor) else a.nbytes for a in arrays))

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        teacher: nn.Module,
        module_names: Sequence[str],
        dataset: Dataset,
        storage: str = "memory",
        directory: str | os.PathLike | None = None,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.float32,
        num_workers: int = 0,
    ) -> TeacherOutputCache:
        """Run ``teacher`` (frozen, eval mode) over ``dataset`` once and keep its outputs.

        Args:
            teacher: the frozen teacher.
            module_names: teacher modules whose outputs the feature terms compare.
            dataset: the training records under deterministic preprocessing, in the
                order of the training list (``dataset[i]`` is sample index ``i``);
                items are dicts with ``image``.
            storage: ``"memory"`` or ``"disk"``.
            directory: parent folder of the disk cache (required for ``"disk"``).
            batch_size, num_workers: of the pass over the data.
            device: where the teacher runs.
            dtype: storage dtype (``float32`` or ``float16``).
        """
        if storage not in STORAGES:
            raise ValueError(f"teacher cache storage must be one of {STORAGES}, got {storage!r}")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f"teacher cache dtype must be float32 or float16, got {dtype}")
        if storage == "memory":
            cache = cls._run_teacher(teacher, module_names, dataset, batch_size, device, dtype, num_workers)
            logger.info("teacher cache: %d samples, %.1f MB (memory)", len(cache), cache.nbytes / 1e6)
            return cache
        if directory is None:
            raise ValueError("a disk teacher cache needs a directory")
        records = getattr(dataset, "data", None)
        location = Path(directory) / _fingerprint(teacher, module_names, records if records is not None else [], dtype)
        if rank() == 0 and not (location / "manifest.json").is_file():
            # in a multi-process run the first process writes it and the others open it when complete
            cache = cls._run_teacher(teacher, module_names, dataset, batch_size, device, dtype, num_workers)
            cls._save(cache, location, list(module_names), str(dtype))
            logger.info("teacher cache: %d samples, %.1f MB (disk)", len(cache), cache.nbytes / 1e6)
        else:
            logger.info("teacher cache: reusing %s", location)
        barrier()
        return cls._open(location)

    @classmethod
    @torch.no_grad()
    def _run_teacher(cls, teacher: nn.Module, module_names: Sequence[str], dataset: Dataset, batch_size: int,
                     device: str | torch.device, dtype: torch.dtype, num_workers: int) -> TeacherOutputCache:
        """One pass of the frozen teacher over the data, outputs kept in memory."""
        teacher.eval()
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        logits_parts: list[torch.Tensor] = []
        feature_parts: dict[str, list[torch.Tensor]] = {name: [] for name in module_names}
        with FeatureHooks(teacher, module_names, clone=True) as hooks:
            for batch in loader:
                images = torch.as_tensor(batch["image"]).to(device)
                logits_parts.append(teacher(images).to("cpu", dtype))
                for name in module_names:
                    feature_parts[name].append(hooks.features[name].to("cpu", dtype))
                hooks.clear()
        return cls(torch.cat(logits_parts), {name: torch.cat(parts) for name, parts in feature_parts.items()})

    @classmethod
    def _save(cls, cache: TeacherOutputCache, location: Path, module_names: list[str], dtype: str) -> TeacherOutputCache:
        location.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{location.name}.", dir=location.parent))
        try:
            np.save(staging / "logits.npy", np.asarray(cache.logits))
            files = {}
            for i, name in enumerate(module_names):
                files[name] = f"features_{i}.npy"
                np.save(staging / files[name], np.asarray(cache.features[name]))
            manifest = {"num_samples": len(cache), "dtype": dtype, "features": files}
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
            if location.exists():  # an incomplete cache of an earlier crash (no manifest): replace it
                shutil.rmtree(location)
            os.replace(staging, location)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls._open(location)

    @classmethod
    def _open(cls, location: Path) -> TeacherOutputCache:
        manifest = json.loads((location / "manifest.json").read_text())
        logits = np.load(location / "logits.npy", mmap_mode="r")
        features = {name: np.load(location / file, mmap_mode="r") for name, file in manifest["features"].items()}
        return cls(logits, features, location)

    def lookup(self, indices: torch.Tensor | Sequence[int], device: str | torch.device = "cpu"
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Float32 logits and feature maps of the samples at ``indices``, on ``device``."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1} of the teacher cache: "
                             f"the training list changed since it was built")

        def take(values: torch.Tensor | np.ndarray) -> torch.Tensor:
            if isinstance(values, torch.Tensor):
                chosen = values[index]
            else:  # memory-mapped array: fancy indexing reads just these rows
                chosen = torch.from_numpy(np.ascontiguousarray(values[index.numpy()]))
            return chosen.to(device=device, dtype=torch.float32)

        return take(self.logits), {name: take(values) for name, values in self.features.items()}
