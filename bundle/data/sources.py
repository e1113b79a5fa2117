"""Data sets by name: one call from a config turns ``dataset`` + ``dataset_dir`` into splits.

=======================  =====================================================  ===========
``dataset``              what ``dataset_dir`` points at                          task
=======================  =====================================================  ===========
``synthetic``            nothing (generated; cached under ``cache_dir``)         multi-label
``synthetic_binary``     nothing; normal / abnormal of the same phantoms         multi-class
``pneumoniamnist``       folder or file ``pneumoniamnist*.npz``                  multi-class
``chestmnist``           folder or file ``chestmnist*.npz``                      multi-label
``chexpert``             folder with ``train.csv`` (and ``valid.csv``)           multi-label
``nih``                  folder with ``Data_Entry_2017*.csv`` and images         multi-label
``vindr``                folder with ``train.csv`` and ``train/*.dicom``         multi-label
``cxr3``                 folder with ``metadata.csv`` and ``images/``            multi-class
``padchest``             folder with the PadChest label csv and ``<ImageDir>/``  multi-label
``folder``               ``<dir>/<CLASS>/*.png`` (or ``train/``, ``test/`` ...)   multi-class
``csv``                  a CSV file (options name the columns)                   either
=======================  =====================================================  ===========

Options every label-file set takes (``dataset_options``): ``image_root`` (where the images are,
default ``dataset_dir``), ``allow_outside_paths`` (accept image paths that leave it; refused by
default), ``check_files`` (false: do not look at the image folder). Missing images do not stop
the reading: their records are kept for the data-set check, which lists them with every other
problem (and ``skip_bad_records`` leaves them out); ``missing: "raise"`` stops at once instead.

Splits: a data set's official split is used when it has one (MedMNIST; NIH's
``train_val_list.txt``/``test_list.txt``; Kermany folders); a missing validation
split is carved from training by patient; otherwise a seeded patient-level split
(no patient in two splits). A split with a non-zero fraction that comes out empty (too few
patients, an empty official list) is an error naming the data set and the split.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import readers
from .datalist import Datalist, Task
from .errors import CXRDataError
from .phantoms import make_phantom_datalist
from .splits import patient_split, split_from_official

__all__ = ["DataSplits", "load_splits", "DATASETS"]

SPLITS = ("train", "validation", "test")
logger = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Train / validation / test datalists and how to read their labels."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    class_names: list[str]
    task: Task
    dropped: dict[str, int] = field(default_factory=dict)  # label-file rows left out on purpose, by reason
    source: str | None = None  # what was read (label file or folder), for messages

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def all(self) -> list[dict[str, Any]]:
        """Every record of the data set (external validation tests a model on all of another data set)."""
        return self.train + self.validation + self.test

    def summary(self) -> str:
        left_out = "; left out: " + ", ".join(f"{n:,} rows {why}" for why, n in self.dropped.items()) \
            if self.dropped else ""
        return (
            f"{self.task} over {self.num_classes} classes {self.class_names}; "
            f"train {len(self.train)}, validation {len(self.validation)}, test {len(self.test)} images{left_out}"
        )


def _one_file(dataset_dir: str, patterns: tuple[str, ...], what: str) -> str:
    if os.path.isfile(dataset_dir):
        return dataset_dir
    for pattern in patterns:
        found = sorted(glob.glob(os.path.join(dataset_dir, pattern)))
        if found:
            return found[0]
    raise CXRDataError(dataset_dir, f"no {what} found (looked for {', '.join(patterns)})")


def _synthetic(dataset_dir: str | None, options: dict[str, Any]) -> Datalist:
    return make_phantom_datalist(
        num_images=int(options.get("num_images", 1200)),
        image_size=int(options.get("source_size", 256)),
        seed=int(options.get("generator_seed", 0)),
        cache_dir=options.get("cache_dir"),
    )


def _synthetic_binary(dataset_dir: str | None, options: dict[str, Any]) -> Datalist:
    findings = _synthetic(dataset_dir, options)
    records = [
        {**r, "label": [1.0 - r["abnormal"], r["abnormal"]], "label_mask": [1.0, 1.0]} for r in findings.records
    ]
    return Datalist(records, ["Normal", "Abnormal"], "multiclass")


def _medmnist(flavour: str) -> Callable[[str, dict[str, Any]], Datalist]:
    def read(dataset_dir: str, options: dict[str, Any]) -> Datalist:
        return readers.read_medmnist(_one_file(dataset_dir, (f"{flavour}*.npz",), f"{flavour} .npz"), flavour=flavour)

    return read


_FILE_OPTIONS = ("check_files", "missing", "allow_outside_paths")


def _file_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options about image files every label-file reader takes; missing images are kept for the check."""
    return {"missing": "keep", **{k: options[k] for k in _FILE_OPTIONS if k in options}}


def _image_root(dataset_dir: str, options: dict[str, Any], default: str | None = None) -> str:
    return options.get("image_root") or default or (dataset_dir if os.path.isdir(dataset_dir) else
                                                    os.path.dirname(dataset_dir))


def _chexpert(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    keys = ("views", "uncertain", "blank")
    kwargs = {**{k: options[k] for k in keys if k in options}, **_file_options(options)}
    root = _image_root(dataset_dir, options)
    train = readers.read_chexpert(_one_file(dataset_dir, ("train.csv", "train.csv.gz"), "CheXpert train.csv"),
                                  root, **kwargs)
    valid_csv = os.path.join(dataset_dir, "valid.csv")
    if os.path.isfile(valid_csv):  # CheXpert's own validation set: our test split (its test set is hidden)
        test = readers.read_chexpert(valid_csv, root, **kwargs)
        train.splits = {"train": train.records, "test": test.records}
        train.records = train.records + test.records
    return train


def _nih(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    csv = _one_file(dataset_dir, ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz"), "NIH Data_Entry_2017 csv")
    bbox = sorted(glob.glob(os.path.join(dataset_dir, "BBox_List_2017.csv*")))
    return readers.read_nih(csv, _image_root(dataset_dir, options), bbox_csv=bbox[0] if bbox else None,
                            **_file_options(options))


def _vindr(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    csv = _one_file(dataset_dir, ("train.csv", "train.csv.gz"), "VinDr-CXR train.csv")
    train_dir = os.path.join(dataset_dir, "train")
    image_root = _image_root(dataset_dir, options, train_dir if os.path.isdir(train_dir) else None)
    return readers.read_vindr(csv, image_root, vote=options.get("vote", "majority"), **_file_options(options))


def _cxr3(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    return readers.read_cxr3(dataset_dir, **_file_options(options))


def _padchest(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    csv = _one_file(dataset_dir, ("PADCHEST_chest_x_ray_images_labels_160K*.csv*", "padchest*labels*.csv*",
                                  "*160K*.csv*"), "PadChest label csv")
    keys = ("projections", "physician_only")
    return readers.read_padchest(csv, _image_root(dataset_dir, options),
                                 **{k: options[k] for k in keys if k in options}, **_file_options(options))


def _folder(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    keys = ("extensions", "patient_id_from")
    return readers.read_image_folder(dataset_dir, **{k: options[k] for k in keys if k in options})


def _csv(dataset_dir: str, options: dict[str, Any]) -> Datalist:
    known = ("image_column", "label_columns", "class_column", "class_names", "patient_column", "view_column",
             "class_map")
    csv = _one_file(dataset_dir, ("*.csv",), "CSV file")
    return readers.read_csv_datalist(csv, options.get("image_root"), **{k: options[k] for k in known if k in options},
                                     **_file_options(options))


DATASETS: dict[str, Callable[[Any, dict[str, Any]], Datalist]] = {
    "synthetic": _synthetic,
    "synthetic_binary": _synthetic_binary,
    "pneumoniamnist": _medmnist("pneumoniamnist"),
    "chestmnist": _medmnist("chestmnist"),
    "chexpert": _chexpert,
    "nih": _nih,
    "vindr": _vindr,
    "cxr3": _cxr3,
    "padchest": _padchest,
    "folder": _folder,
    "csv": _csv,
}


def load_splits(
    dataset: str,
    dataset_dir: str | os.PathLike | None = None,
    seed: int = 0,
    fractions: dict[str, float] | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_images: int | None = None,
    options: dict[str, Any] | None = None,
) -> DataSplits:
    """Read a data set by name and split it into train / validation / test.

    Args:
        dataset: a name from :data:`DATASETS`.
        dataset_dir: where it lives (ignored by the synthetic sets).
        seed: seed of the patient-level split (and nothing else).
        fractions: split fractions when the data set has no official split.
        cache_dir: where generated data is cached (synthetic sets).
        max_images: keep at most this many images per split (quick runs, tests).
        options: reader options (e.g. ``uncertain="ones"`` for CheXpert,
            ``num_images`` for the phantoms, ``class_column`` for ``csv``).

    Raises:
        CXRDataError: unknown data set name, missing folder, or any reader error.
    """
    if dataset not in DATASETS:
        raise CXRDataError(None, f"unknown dataset {dataset!r}; available: {', '.join(sorted(DATASETS))}")
    if not dataset.startswith("synthetic"):
        if dataset_dir is None or not os.path.exists(dataset_dir):
            raise CXRDataError(dataset_dir, f"dataset_dir for {dataset!r} does not exist")
        dataset_dir = str(Path(dataset_dir).expanduser())
    started = time.monotonic()
    if not dataset.startswith("synthetic"):  # a big label file and its image folder take a while: say so
        logger.info("reading the %s data set in %s ...", dataset, dataset_dir)
    datalist = DATASETS[dataset](dataset_dir, {**(options or {}), "cache_dir": cache_dir})
    if not dataset.startswith("synthetic"):
        logger.info("read %s records of %s in %.1f s", f"{len(datalist.records):,}", datalist.source or dataset_dir,
                    time.monotonic() - started)
    fractions = fractions or {"train": 0.7, "validation": 0.1, "test": 0.2}
    if all(name in datalist.splits for name in SPLITS):
        splits = {name: datalist.splits[name] for name in SPLITS}
    elif "train" in datalist.splits and "test" in datalist.splits:
        validation_fraction = fractions["validation"] / (fractions["train"] + fractions["validation"])
        splits = split_from_official(datalist, validation_fraction, seed)
    else:
        splits = patient_split(datalist.records, fractions, seed=seed)
    if max_images is not None:
        splits = {name: records[:max_images] for name, records in splits.items()}
    source = datalist.source or (str(dataset_dir) if dataset_dir is not None else dataset)
    for name in SPLITS:
        official = name in datalist.splits
        if not splits[name] and (official or fractions.get(name, 0) > 0):
            patients = len({r.get("patient_id") for r in datalist.records})
            why = "its official list is empty" if official else \
                f"{len(datalist.records)} record(s) of {patients} patient(s) in all; a patient-level split into " \
                f"train, validation and test needs at least 3 patients"
            raise CXRDataError(source, f"the {name} split of {dataset!r} is empty ({why})")
    return DataSplits(splits["train"], splits["validation"], splits["test"], datalist.class_names, datalist.task,
                      dropped=dict(datalist.dropped), source=source)
