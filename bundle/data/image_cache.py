"""The image cache of training and evaluation: decoded, resized images kept at the training size.

Decoding a radiograph is the dearest step of the data pipeline (NIH's 1024 px PNGs: about 12 ms
each for the decode alone), and every epoch would repeat it. :class:`CachedImageDataset` runs the
deterministic head of a MONAI ``Compose`` (read, resize: everything before the first random
transform, where MONAI's own ``CacheDataset`` stops too) once per record, keeps the image in one
compact array, and runs only the random tail (augmentation, casts) each time an item is read.

Modes (``image_cache`` in ``configs/student.json``):

* ``"memory"``: one ``(N, C, H, W)`` array in RAM, at the training size, in ``dtype``
  (``float16`` by default: 2 bytes a pixel, half of ``CacheDataset``'s float32, and its rounding,
  at most 2.4e-4 on the [0, 1] scale, is far below the 1/255 step of an 8-bit PNG; ``uint8``: 1 byte,
  rounded to that step; ``float32``: exact). At most ``budget`` bytes: the records beyond it are
  read from their files each time (as ``CacheDataset``'s ``cache_num``).
* ``"disk"``: the same array as a ``.npy`` file opened as a memory map under ``directory``, in a
  folder named by a key of the preprocessing (each cached transform and its settings, e.g. the
  resize's size), the dtype and the records: a rerun, a resumed run and the next stage of the
  chain at the same size reuse it; any change makes a new one. It is written to a temporary
  folder and renamed when complete (a crash never leaves a half cache that looks whole); in a
  multi-process run the first process of each node (``LOCAL_RANK`` 0) writes it while the others
  wait, so the folder may be node-local or shared. RAM: none beyond the
  pages the OS keeps.
* ``"none"``: every image read from its file every epoch (what a data set that fits nowhere needs).
* ``"auto"`` (default): ``"memory"`` when the whole cache fits ``budget``, else ``"disk"``
  (``"none"`` without a ``directory``); ``"disk"`` in a multi-process run (``torchrun``), where one
  process per node decodes the images once and every process reads the same file through the
  operating system's shared page cache, instead of each decoding and holding a copy of its own.

Before building, one line says what it costs and what was chosen, e.g. ``image cache (training):
78,468 images x 8.2 kB (1 x 64 x 64 float16) = 643 MB; memory budget 6.3 GB; auto -> memory``. The build
decodes with ``num_workers`` processes (PyTorch's ``DataLoader``, order kept) and shows a bar on a
terminal or progress lines elsewhere (:func:`bundle.console.progress`).

The budget's default (``"auto"``, :func:`default_budget`): a quarter of the machine's physical
memory, divided among the processes of a multi-process run on one node (``LOCAL_WORLD_SIZE``).

Config (``configs/student.json``: ``train#dataset``, ``validate#dataset``)::

    "dataset": {"_target_": "bundle.data.CachedImageDataset", "data": "@data#splits.validation",
                "transform": "@preprocessing#eval", "mode": "@image_cache", "budget": "@image_cache_budget",
                "dtype": "@image_cache_dtype", "directory": "@image_cache_dir", "num_workers": "@num_workers",
                "name": "validation"}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable, Transform
from monai.transforms.transform import RandomizableTrait
from torch.utils.data import DataLoader, Dataset

from ..console import progress
from ..distributed import barrier, is_distributed, rank
from ..keys import Keys

__all__ = ["CachedImageDataset", "IMAGE_CACHE_MODES", "IMAGE_CACHE_DTYPES", "default_budget", "default_num_workers",
           "physical_memory", "parse_bytes", "format_bytes"]

IMAGE_CACHE_MODES = ("auto", "memory", "disk", "none")
IMAGE_CACHE_DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}
CACHE_FORMAT = 1  # bump when the files' layout changes
logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ machine


def physical_memory() -> int:
    """Bytes of physical memory of this machine (a cgroup's limit when it is lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return int(total)


def local_rank() -> int:
    """This process's rank on its node (``torchrun``'s ``LOCAL_RANK``; 0 without it)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return 0


def local_processes() -> int:
    """Training processes on this node (``torchrun``'s ``LOCAL_WORLD_SIZE``; 1 without it)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def default_budget() -> int:
    """The memory cache's default budget: a quarter of physical memory, shared by the node's processes."""
    return physical_memory() // 4 // local_processes()


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_num_workers(num_records: int | None = None, small: int = 8192, most: int = 16) -> int:
    """DataLoader worker processes by default: the cores this process may use, less one for the
    training loop, shared among the node's training processes (``LOCAL_WORLD_SIZE``), at most ``most``.

    Training sets under ``small`` records get 0 (the main process): they are cached in memory after
    the first epoch, where starting and feeding workers costs more than it saves, and a run without
    workers is exactly reproducible across a resume (:class:`bundle.handlers.SeedEachEpoch`).
    """
    if num_records is not None and num_records < small:
        return 0
    return max(0, min(most, (available_cores() - local_processes()) // local_processes()))


def parse_bytes(value: int | float | str | None, default: Callable[[], int] = default_budget) -> int:
    """``"6GB"``, ``"512 MiB"``, ``2e9``, ``"auto"`` (``default()``) -> bytes."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return int(default())
    if isinstance(value, (int, float)):
        return int(value)
    text = value.strip().replace(" ", "").upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "TB": 10**12, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(float(text))


def format_bytes(count: float) -> str:
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{int(count)} B"


# ------------------------------------------------------------------------------------------ keys


def _describe(value: Any, depth: int = 0) -> Any:
    """A JSON-able description of a transform's settings (for the disk cache's key)."""
    if depth > 4:
        return type(value).__name__
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (torch.dtype, np.dtype)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_describe(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"array{tuple(value.shape)}"
    if callable(value) and not hasattr(value, "__dict__"):
        return getattr(value, "__qualname__", type(value).__name__)
    if hasattr(value, "__dict__"):
        settings = {k: _describe(v, depth + 1) for k, v in sorted(vars(value).items())
                    if not k.startswith("_") and k not in ("R", "backend")}
        return {"type": f"{type(value).__module__}.{type(value).__qualname__}", **settings}
    return type(value).__name__


def preprocessing_key(transforms: Sequence[Any]) -> str:
    """The cached transforms and their settings, as text (part of the disk cache's key)."""
    return json.dumps([_describe(t) for t in transforms], sort_keys=True, default=str)


def _record_text(record: Mapping[str, Any]) -> bytes:
    parts = []
    for key in sorted(record, key=str):
        value = record[key]
        if isinstance(value, np.ndarray):
            parts.append(f"{key}=" + hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest())
        else:
            parts.append(f"{key}={value!r}")
    return "|".join(parts).encode()


def cache_key(transforms: Sequence[Any], dtype: str, records: Sequence[Mapping[str, Any]]) -> str:
    """Key of a disk cache: the cached preprocessing, the dtype, the layout and every record."""
    digest = hashlib.sha256()
    digest.update(f"format {CACHE_FORMAT}; dtype {dtype}; ".encode())
    digest.update(preprocessing_key(transforms).encode())
    for record in records:
        digest.update(_record_text(record))
        digest.update(b"\n")
    return digest.hexdigest()[:20]


# ------------------------------------------------------------------------------------------ dataset


class _Head(Dataset):
    """The records under the cached (deterministic) head of the transform: what the build reads."""

    def __init__(self, data: Sequence[Mapping[str, Any]], transform: Compose, end: int) -> None:
        self.data, self.transform, self.end = data, transform, end

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(dict(self.data[index]), end=self.end, threading=True)


def _identity(item: Any) -> Any:
    return item


def _plain(value: Any) -> Any:
    """Small values without MONAI's metadata, compact to keep for 100,000 records. Copied: a tensor from a
    DataLoader worker lives in shared memory that holds a file descriptor (and a page) until it is freed."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy() if value.ndim else value.item()
    return value


class _Absent:
    """The value of a key an item lacks; one object, also after a disk cache is unpickled."""

    def __reduce__(self) -> str:
        return "_ABSENT"


_ABSENT = _Absent()


class _Columns:
    """The other values of the cached items (labels, masks, patient ids ...), one column per key.

    A key whose values are arrays of one shape and dtype (labels, masks) is one stacked array: 56 bytes an
    item for 14 float32s, against about 600 for a dict of two small arrays per item, which at NIH's or
    CheXpert's size is the difference between memory that stays flat and memory that grows with the records.
    Any other key is a list (strings are shared with the records). ``columns[i]`` is item ``i``'s dict, its
    arrays copied (a transform may change them in place).
    """

    __slots__ = ("columns", "count")

    def __init__(self, count: int) -> None:
        self.columns: dict[str, Any] = {}
        self.count = count

    def __len__(self) -> int:
        return self.count

    def set(self, index: int, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            column = self.columns.get(key)
            if column is None:
                if index == 0 and isinstance(value, np.ndarray):
                    column = np.empty((self.count, *value.shape), value.dtype)
                else:
                    column = [_ABSENT] * self.count
                self.columns[key] = column
            elif isinstance(column, np.ndarray) and not (
                    isinstance(value, np.ndarray) and value.shape == column.shape[1:] and value.dtype == column.dtype):
                column = self._as_list(key, index)
            column[index] = value
        for key, column in self.columns.items():
            if key not in values:  # rare: a key some items lack
                self._as_list(key, index)[index] = _ABSENT

    def _as_list(self, key: str, filled: int) -> list[Any]:
        """Column ``key`` as a list (its first ``filled`` values kept), for values that do not stack."""
        column = self.columns[key]
        if isinstance(column, np.ndarray):
            column = self.columns[key] = [*column[:filled], *([_ABSENT] * (self.count - filled))]
        return column

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {}
        for key, column in self.columns.items():
            value = column[index]
            if value is not _ABSENT:
                item[key] = value.copy() if isinstance(value, np.ndarray) else value
        return item


class _Store:
    """The cached images and the other values of each cached item (no ``__dict__``: ``set_rnd`` skips it)."""

    __slots__ = ("images", "others", "count")

    def __init__(self, images: np.ndarray | None, others: _Columns | list[dict[str, Any]], count: int) -> None:
        self.images, self.others, self.count = images, others, count


class CachedImageDataset(Dataset):
    """A MONAI-style dataset whose deterministic preprocessing is done once, images kept compactly.

    See the module docstring for the modes. ``dataset[i]`` is what ``transform(data[i])`` gives,
    except that the cached image went through ``dtype`` on the way (``float32`` is exact).

    Args:
        data: the records (dicts with ``image`` and labels).
        transform: a MONAI ``Compose`` (or a list of transforms).
        mode: ``"auto"``, ``"memory"``, ``"disk"`` or ``"none"``.
        budget: bytes the memory cache may take (``"auto"``: :func:`default_budget`; ``"6GB"``, ``2e9``).
        dtype: ``"float16"``, ``"uint8"`` (images in [0, 1], stored x 255) or ``"float32"``.
        directory: parent folder of disk caches (``"disk"``; ``"auto"`` falls back to it).
        num_workers: processes decoding while the cache is built.
        name: what the records are, for the messages ("training", "validation").
        image_key: the key of the image.
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], transform: Compose | Sequence[Any] | None,
                 mode: str = "auto", budget: int | float | str | None = "auto", dtype: str = "float16",
                 directory: str | os.PathLike | None = None, num_workers: int = 0, name: str = "training",
                 image_key: str = Keys.IMAGE) -> None:
        if mode not in IMAGE_CACHE_MODES:
            raise ValueError(f"image_cache must be one of {IMAGE_CACHE_MODES}, got {mode!r}")
        if dtype not in IMAGE_CACHE_DTYPES:
            raise ValueError(f"image_cache_dtype must be one of {sorted(IMAGE_CACHE_DTYPES)}, got {dtype!r}")
        self.data = data
        self.transform = transform if isinstance(transform, Compose) else Compose(list(transform or []))
        self.dtype, self.image_key, self.name = dtype, image_key, name
        self.num_workers = int(num_workers)
        self.budget = parse_bytes(budget)
        self.head_end = self.transform.get_index_of_first(
            lambda t: isinstance(t, (RandomizableTrait, Randomizable)) or not isinstance(t, Transform))
        if self.head_end is None:
            self.head_end = len(self.transform.transforms)
        self.head = list(self.transform.transforms[: self.head_end])
        self.location: Path | None = None
        self.requested_mode = mode
        self.mode, self._store = self._build(mode, directory)

    # -- sizes and the choice

    def _item_shape(self) -> tuple[int, ...] | None:
        """Shape of one cached image, from the first record (one image decoded)."""
        if not len(self.data):
            return None
        first = _Head(self.data[:1], self.transform, self.head_end)[0]
        return tuple(int(v) for v in np.shape(first[self.image_key]))

    def estimate(self) -> tuple[int, tuple[int, ...] | None]:
        """(bytes per image, shape of one image) of the cache."""
        shape = self._item_shape()
        if shape is None:
            return 0, None
        return int(np.prod(shape)) * np.dtype(IMAGE_CACHE_DTYPES[self.dtype]).itemsize, shape

    def _build(self, mode: str, directory: str | os.PathLike | None) -> tuple[str, _Store | None]:
        count = len(self.data)
        if mode == "none" or count == 0 or self.head_end == 0:
            why = "nothing to cache" if count == 0 or self.head_end == 0 else "every image read each epoch"
            self._announce(f"image cache ({self.name}): none ({why})")
            return "none", None
        per_image, shape = self.estimate()
        total = per_image * count
        chosen = mode
        if mode == "auto":
            shared = is_distributed() and directory is not None  # one decode pass for all processes, one page cache
            chosen = "memory" if total <= self.budget and not shared else ("disk" if directory is not None else "none")
        if chosen == "disk" and directory is None:
            raise ValueError("image_cache 'disk' needs a directory (image_cache_dir)")
        cached = count if chosen != "memory" else min(count, self.budget // max(per_image, 1))
        size = f"{count:,} images x {format_bytes(per_image)} ({' x '.join(map(str, shape))} {self.dtype}) = " \
               f"{format_bytes(total)}"
        detail = {"memory": f"memory{'' if cached == count else f' ({cached:,} of them; the rest read each epoch)'}",
                  "disk": f"disk, under {directory}", "none": "none (too big for the budget; no image_cache_dir)"}
        self._announce(f"image cache ({self.name}): {size}; memory budget {format_bytes(self.budget)}; "
                       f"{'auto -> ' if mode == 'auto' else ''}{detail[chosen]}")
        if chosen == "none":
            return "none", None
        if chosen == "memory":
            images = np.empty((cached, *shape), IMAGE_CACHE_DTYPES[self.dtype]) if cached else None
            others = self._fill(images, cached)
            return "memory", _Store(images, others, cached)
        return "disk", self._disk_store(Path(directory), shape)

    @staticmethod
    def _announce(line: str) -> None:
        if rank() == 0:
            if logging.getLogger().handlers:  # a bundle run: its console handler and log.txt
                logger.info(line)
            else:
                print(line, flush=True)

    # -- building

    def _to_store(self, image: Any) -> np.ndarray:
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if self.dtype == "uint8":
            return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        return array.astype(IMAGE_CACHE_DTYPES[self.dtype])

    def _fill(self, images: np.ndarray | None, count: int) -> _Columns:
        """Decode the first ``count`` records into ``images``; the other values of each, returned."""
        others = _Columns(count)
        if not count:
            return others
        head = _Head(self.data[:count], self.transform, self.head_end)
        loader = DataLoader(head, batch_size=None, shuffle=False, num_workers=self.num_workers, collate_fn=_identity)
        for index, item in enumerate(progress(loader, f"building the {self.name} image cache", total=count,
                                              unit="images")):
            image = self._to_store(item[self.image_key])
            if image.shape != images.shape[1:]:
                raise ValueError(f"image cache ({self.name}): record {index} gives an image of shape {image.shape}, "
                                 f"the first one {images.shape[1:]}: the cached preprocessing must resize every "
                                 f"image to one size (or set image_cache to 'none')")
            images[index] = image
            others.set(index, {k: _plain(v) for k, v in item.items() if k != self.image_key})
        return others

    def _disk_store(self, directory: Path, shape: tuple[int, ...]) -> _Store:
        key = cache_key(self.head, self.dtype, self.data)
        location = directory / f"{self.name}-{key}"
        builder = local_rank() == 0  # one process per node writes it (a node-local folder, or a shared one)
        if builder and not (location / "manifest.json").is_file():
            directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{location.name}.", dir=directory))
            try:
                images = np.lib.format.open_memmap(staging / "images.npy", mode="w+",
                                                   dtype=IMAGE_CACHE_DTYPES[self.dtype], shape=(len(self.data), *shape))
                others = self._fill(images, len(self.data))
                images.flush()
                del images
                with open(staging / "others.pkl", "wb") as stream:
                    pickle.dump(others, stream, protocol=pickle.HIGHEST_PROTOCOL)
                manifest = {"format": CACHE_FORMAT, "records": len(self.data), "shape": list(shape),
                            "dtype": self.dtype, "preprocessing": json.loads(preprocessing_key(self.head))}
                (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
                if (location / "manifest.json").is_file():  # another node finished it first (a shared folder)
                    shutil.rmtree(staging)
                else:
                    if location.exists():  # an incomplete cache of an earlier crash: replace it
                        shutil.rmtree(location)
                    os.replace(staging, location)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        elif builder:
            self._announce(f"image cache ({self.name}): reusing {location}")
        barrier()
        self.location = location
        images = np.load(location / "images.npy", mmap_mode="r")
        with open(location / "others.pkl", "rb") as stream:
            others = pickle.load(stream)
        return _Store(images, others, len(others))

    # -- reading

    @property
    def nbytes(self) -> int:
        """Bytes of the cached images (in RAM for ``memory``, on disk for ``disk``)."""
        store = self._store
        return 0 if store is None or store.images is None else int(store.images.nbytes)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        store = self._store
        if store is None or index >= store.count:
            return self.transform(dict(self.data[index]))
        image = np.asarray(store.images[index])
        image = torch.from_numpy(image.astype(np.float32) / 255.0 if self.dtype == "uint8" else
                                 image.astype(np.float32, copy=True))
        item = {**store.others[index], self.image_key: image}
        if self.head_end >= len(self.transform.transforms):
            return item
        return self.transform(item, start=self.head_end)
