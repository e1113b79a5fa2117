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
weights, the hooked module names and the training records; it is written, as the pass goes,
into a temporary folder that is renamed when complete, so a crash never leaves a half cache
that looks whole. Size: ``N x (K + sum_k C_k H_k W_k)`` numbers, e.g. DenseNet121's
three blocks at 32 px are 28,672 per image (115 kB in float32, 57 kB in float16); at 128 px its
first dense block alone is about 1 MB an image, 80 GB over NIH's training split. So the size is
estimated before the pass and logged with the choice, and a memory cache over its budget
(``teacher_cache_budget``; default a quarter of physical memory) is refused before training with
the alternatives (disk in float16, the live teacher, the logits alone). With the feature term
off (``loss_weights#feature 0``) only the logits are kept (a few dozen bytes an image).

Config (stage configs): ``"teacher_cache": "memory"`` (or ``"disk"``, or null for the
online teacher); ``"teacher_cache_dtype": "float16"`` halves the size;
``"teacher_cache_budget": "auto"`` (or ``"16GB"``, a number of bytes).

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

from ..console import progress
from ..data.errors import CXRDataError
from ..data.image_cache import format_bytes, parse_bytes
from ..distributed import barrier, rank
from ..keys import Keys
from .features import FeatureHooks
from .recorded import read_teacher_predictions
from .teachers import TeacherOutput

__all__ = ["TeacherOutputCache", "coverage_summary", "with_sample_index"]

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


def coverage_summary(path: str | os.PathLike, available: np.ndarray) -> str:
    """How many training images a recorded teacher gives soft targets for, and how many learn from labels alone."""
    covered, total = int(np.sum(available)), len(available)
    share = f" ({100.0 * covered / total:.1f}%)" if total else ""
    line = f"recorded teacher {path}: soft targets for {covered:,} of {total:,} training images{share}"
    if covered < total:
        line += (f"; the other {total - covered:,} learn from their labels alone (the soft term's mean, "
                 f"loss_mean/soft, is over the covered images only)")
    return line


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
        logger.info(coverage_summary(path, available))
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
        budget: int | float | str | None = "auto",
    ) -> TeacherOutputCache:
        """Run ``teacher`` (frozen, eval mode) over ``dataset`` once and keep its outputs.

        The size is estimated before the pass (one image through the teacher gives each map's
        shape): ``N x (K + sum_k C_k H_k W_k)`` numbers of ``dtype``, logged in one line with the
        choice. A memory cache larger than ``budget`` is refused there, before any training, with
        the estimate and the alternatives (a disk cache in float16, the live teacher, the logits
        alone): never an out-of-memory crash halfway through a pass. Both storages are filled in
        place as the pass goes (a disk cache straight into its memory-mapped files), so the pass
        itself never holds more than one batch besides the cache.

        Args:
            teacher: the frozen teacher.
            module_names: teacher modules whose outputs the feature terms compare (none: logits only).
            dataset: the training records under deterministic preprocessing, in the
                order of the training list (``dataset[i]`` is sample index ``i``);
                items are dicts with ``image``.
            storage: ``"memory"`` or ``"disk"``.
            directory: parent folder of the disk cache (required for ``"disk"``).
            batch_size, num_workers: of the pass over the data.
            device: where the teacher runs.
            dtype: storage dtype (``float32`` or ``float16``).
            budget: bytes a memory cache may take (``"auto"``: a quarter of physical memory,
                :func:`bundle.data.image_cache.default_budget`; ``"8GB"``; a number).
        """
        if storage not in STORAGES:
            raise ValueError(f"teacher cache storage must be one of {STORAGES}, got {storage!r}")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f"teacher cache dtype must be float32 or float16, got {dtype}")
        names = list(module_names)
        shapes = cls._probe_shapes(teacher, names, dataset, device)
        numbers = sum(int(np.prod(shape)) for shape in shapes.values())  # per sample
        per_sample = numbers * (torch.finfo(dtype).bits // 8)
        total = per_sample * len(dataset)
        limit = parse_bytes(budget)
        maps = f"logits {shapes['logits'][0]}" + "".join(
            f" + {name} {' x '.join(map(str, shape))}" for name, shape in shapes.items() if name != "logits")
        line = (f"teacher cache: {len(dataset):,} images x {format_bytes(per_sample)} ({maps}, "
                f"{str(dtype).replace('torch.', '')}) = {format_bytes(total)}; ")
        if storage == "memory" and total > limit:
            raise CXRDataError(None, line + f"that exceeds the memory budget of {format_bytes(limit)} "
                               f"(teacher_cache_budget), so it is refused before training. Instead: teacher_cache "
                               f"'disk' with teacher_cache_dtype 'float16' ({format_bytes(numbers * 2 * len(dataset))} "
                               f"on disk, memory-mapped); the live teacher (teacher_cache null: it runs on each "
                               f"batch, nothing kept); the logits alone (loss_weights#feature 0: "
                               f"{format_bytes(shapes['logits'][0] * 2 * len(dataset))} in float16); "
                               f"or a larger teacher_cache_budget")
        if storage == "memory":
            logger.info(line + f"memory (budget {format_bytes(limit)})")
            cache = cls._run_teacher(teacher, names, dataset, batch_size, device, dtype, num_workers, shapes)
            return cache
        if directory is None:
            raise ValueError("a disk teacher cache needs a directory")
        records = getattr(dataset, "data", None)
        location = Path(directory) / _fingerprint(teacher, names, records if records is not None else [], dtype)
        if rank() == 0 and not (location / "manifest.json").is_file():
            # in a multi-process run the first process writes it and the others open it when complete
            logger.info(line + f"disk, under {location}")
            cls._build_on_disk(teacher, names, dataset, batch_size, device, dtype, num_workers, shapes, location)
        else:
            logger.info("teacher cache: reusing %s", location)
        barrier()
        return cls._open(location)

    @staticmethod
    @torch.no_grad()
    def _probe_shapes(teacher: nn.Module, module_names: list[str], dataset: Dataset, device: str | torch.device
                      ) -> dict[str, tuple[int, ...]]:
        """One sample's shape of the logits and of each hooked map (one image through the teacher)."""
        if not len(dataset):
            return {"logits": (0,), **{name: (0,) for name in module_names}}
        teacher.eval()
        image = torch.as_tensor(dataset[0]["image"])[None].to(device)
        with FeatureHooks(teacher, module_names, clone=True) as hooks:
            logits = teacher(image)
            shapes = {"logits": tuple(logits.shape[1:])}
            shapes.update({name: tuple(hooks.features[name].shape[1:]) for name in module_names})
        return shapes

    @classmethod
    @torch.no_grad()
    def _run_teacher(cls, teacher: nn.Module, module_names: Sequence[str], dataset: Dataset, batch_size: int,
                     device: str | torch.device, dtype: torch.dtype, num_workers: int,
                     shapes: Mapping[str, tuple[int, ...]] | None = None,
                     arrays: Mapping[str, Any] | None = None) -> TeacherOutputCache:
        """One pass of the frozen teacher over the data, outputs written in place into ``arrays``
        (``{"logits": ..., name: ...}``, each ``(N, ...)``; default: tensors in memory)."""
        teacher.eval()
        shapes = shapes or cls._probe_shapes(teacher, list(module_names), dataset, device)
        if arrays is None:
            arrays = {name: torch.empty((len(dataset), *shape), dtype=dtype) for name, shape in shapes.items()}
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        position = 0
        with FeatureHooks(teacher, module_names, clone=True) as hooks:
            for batch in progress(loader, "teacher cache: running the teacher", total=len(loader), unit="batches"):
                images = torch.as_tensor(batch["image"]).to(device)
                outputs = {"logits": teacher(images), **{name: hooks.features[name] for name in module_names}}
                count = len(images)
                for name, values in outputs.items():
                    values = values.detach().to("cpu", dtype)
                    target = arrays[name]
                    if isinstance(target, torch.Tensor):
                        target[position:position + count] = values
                    else:
                        target[position:position + count] = values.numpy()
                hooks.clear()
                position += count
        return cls(arrays["logits"], {name: arrays[name] for name in module_names})

    @classmethod
    def _build_on_disk(cls, teacher: nn.Module, module_names: list[str], dataset: Dataset, batch_size: int,
                       device: str | torch.device, dtype: torch.dtype, num_workers: int,
                       shapes: Mapping[str, tuple[int, ...]], location: Path) -> None:
        """The pass, written straight into memory-mapped ``.npy`` files of a staging folder, renamed when whole."""
        location.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{location.name}.", dir=location.parent))
        numpy_dtype = np.float16 if dtype == torch.float16 else np.float32
        try:
            files = {"logits": "logits.npy", **{name: f"features_{i}.npy" for i, name in enumerate(module_names)}}
            arrays = {name: np.lib.format.open_memmap(staging / files[name], mode="w+", dtype=numpy_dtype,
                                                      shape=(len(dataset), *shapes[name])) for name in files}
            cls._run_teacher(teacher, module_names, dataset, batch_size, device, dtype, num_workers, shapes, arrays)
            for array in arrays.values():
                array.flush()
            del arrays
            manifest = {"num_samples": len(dataset), "dtype": str(dtype),
                        "features": {name: files[name] for name in module_names}}
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
            if location.exists():  # an incomplete cache of an earlier crash (no manifest): replace it
                shutil.rmtree(location)
            os.replace(staging, location)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

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
