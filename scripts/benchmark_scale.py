"""The bundle at the size its users train: NIH ChestX-ray14's 112,120 and CheXpert's 223,414 radiographs.

Builds a data-set folder of N records from a real label file (NIH's ``Data_Entry_2017_v2020.csv``,
CheXpert's ``train.csv``; ``../shared/data/labels``) whose images are hard links (symbolic links
where the file system refuses) to any folder of real radiographs, so every path exists and it costs
no disk, and runs the bundle's own data pipeline over it, each phase timed::

    .venv/bin/python scripts/benchmark_scale.py --dataset nih --sizes 10000,30000,full
    .venv/bin/python scripts/benchmark_scale.py --dataset chexpert --sizes 10000,30000,full

Phases (each N in its own process, so that its peak memory is its own):

* ``read``: the label file into records (the reader, with every image path looked up);
* ``split``: the patient-level train / validation / test split of those records (the fastest of three);
* ``check``: the pre-training data check (``check_data: quick``: every file's entry and labels);
* ``join``: the recorded teacher's file matched to the training images (NIH: the real CheXNet
  predictions, 22,131 rows, a partial coverage as in real use; ``--teacher_predictions none`` skips it);
* ``cache_train``, ``cache_validation``: the image caches built (``bundle.data.CachedImageDataset``,
  ``configs/student.json``'s preprocessing at ``--image_size``, the config's default mode and budget);
  with no worker (``--num_workers 0``) its rate is one core's decode rate;
* ``augment``: ``--augment_samples`` training items read from the cache and augmented in one process:
  what one DataLoader worker (one core) delivers per second once the cache is built (the fastest of three);
* ``epoch``: one training epoch of the 3-conv student at 64 px (hard labels + the recorded teacher's
  soft labels), through the config's DataLoader settings (workers chosen from the machine);
  ``--max_train_batches`` stops it early, the time per record still measured;
* ``epoch_uncached`` (``--uncached_batches``): the same batches with ``image_cache none``, to say
  what the cache saves per epoch;
* ``validation``: one pass over the validation split (the macro AUC computed).

For each phase: seconds, records per second, peak resident memory of the process (and of its
DataLoader workers), bytes per record of every cache. It prints whether the time per record stays
flat and memory bounded as N grows, and writes JSON (``--out``, default
``docs/results/scale_<dataset>.json``) with a ``targets`` list of ``{target, value, status}``:

* time per record of every phase at the largest N within 1.2x of the smallest N's;
* peak resident memory at NIH's 112,120 records under 4 GiB; the memory besides the image cache at
  the largest N within 1.2x of that at the next size down (memory bounded: only the cache, which
  has a budget, may grow with N);
* check + split + teacher join of the full NIH file under 60 s;
* one 64 px epoch over the training split under 30 minutes (estimated from the measured time per
  record when ``--max_train_batches`` cut it short).

Shorten it with ``--sizes 2000`` (one small size), ``--max_train_batches 20``, ``--max_val_batches 10``;
``tests/test_benchmark_scripts.py`` runs it that way. Timings depend on what else runs on the
machine: the report records the CPU, threads, the load average at each size and the date.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DATA_ROOT = Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
LABEL_FILES = {"nih": DATA_ROOT / "labels" / "nih_Data_Entry_2017_v2020.csv.gz",
               "chexpert": DATA_ROOT / "labels" / "chexpert_train.csv.gz"}
TEACHER_FILES = {"nih": DATA_ROOT / "labels" / "chexnet_densenet121_nih_predictions.csv.gz", "chexpert": None}
DEFAULT_IMAGES = DATA_ROOT / "nih14_subset" / "images"
WORKER_MARK = "BENCHMARK_SCALE_RESULT "
GIB = 2**30
FLAT_RATIO = 1.2
PHASES = ("read", "split", "check", "join", "cache_train", "cache_validation", "augment", "epoch", "epoch_uncached",
          "validation")


# ------------------------------------------------------------------------------------ the folder


def _label_rows(dataset: str) -> tuple[list[str], list[list[str]]]:
    with gzip.open(LABEL_FILES[dataset], "rt", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        return header, list(reader)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links refused: a symbolic link costs no disk either
        os.symlink(source, target)


def build_folder(dataset: str, size: int | None, images: Path, root: Path) -> tuple[Path, int]:
    """An NIH- or CheXpert-layout folder of the first ``size`` rows (None: all) of the real label file."""
    header, rows = _label_rows(dataset)
    rows = rows[:size] if size else rows
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not sources:
        raise SystemExit(f"no images in {images}")
    folder = root / f"{dataset}_{len(rows)}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if dataset == "nih":
        (folder / "images").mkdir()
        column = header.index("Image Index")
        for i, row in enumerate(rows):
            _link(sources[i % len(sources)], folder / "images" / row[column])
        label_file = folder / "Data_Entry_2017_v2020.csv"
    else:
        column = header.index("Path")
        made: set[Path] = set()
        for i, row in enumerate(rows):
            relative = Path(row[column].split("/", 1)[1])  # without CheXpert-v1.0-small/
            target = folder / relative
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            _link(sources[i % len(sources)], target)
        label_file = folder / "train.csv"
    with open(label_file, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return folder, len(rows)


# ------------------------------------------------------------------------------------ the worker


def _peak_rss() -> dict[str, float]:
    """Peak resident memory (GiB) of this process and of its largest finished child (DataLoader workers)."""
    scale = 2**30 if sys.platform == "darwin" else 2**20
    return {"self_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale,
            "workers_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / scale}


class Phases:
    def __init__(self, wanted: set[str] | None = None) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.wanted = wanted

    def wants(self, name: str) -> bool:
        return self.wanted is None or name in self.wanted

    def run(self, name: str, records: int | None, step, repeats: int = 1, **extra: Any) -> Any:
        """Time ``step()``, the fastest of ``repeats`` runs (for phases of a second or less, whose single
        timing is mostly the machine's noise); ``records=None``: the step returns ``(value, records)``."""
        print(f"[{name}] ...", flush=True)
        seconds = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            value = step()
            seconds = min(seconds, time.perf_counter() - start)
        if records is None:
            value, records = value
        self.results[name] = {"seconds": seconds, "records": records,
                              "records_per_s": records / seconds if seconds > 0 else None,
                              "us_per_record": 1e6 * seconds / records if records else None,
                              "peak_rss": _peak_rss(), "load_average": [round(v, 2) for v in os.getloadavg()], **extra}
        print(f"[{name}] {seconds:.2f} s, {records:,} records, {records / max(seconds, 1e-9):,.1f} records/s, "
              f"peak RSS {self.results[name]['peak_rss']['self_gib']:.2f} GiB, load "
              f"{self.results[name]['load_average'][0]:.2f}", flush=True)
        return value


def _train_epoch(dataset, distiller, network, batch_size: int, num_workers: int, max_batches: int | None,
                 name: str) -> int:
    import torch
    from torch.utils.data import DataLoader

    from bundle.console import ProgressLog
    from bundle.engines.trainer import batch_to_device

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(list(network.parameters()), lr=3e-3)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    log = ProgressLog(name, total, unit="batches")
    seen = 0
    network.train()
    for index, batch in enumerate(loader):
        if index >= total:
            break
        batch = batch_to_device(batch, "cpu")
        optimizer.zero_grad()
        _, terms = distiller.forward_train(batch, network)
        torch.stack(list(terms.values())).sum().backward()
        optimizer.step()
        seen += len(batch["image"])
        log.update()
    log.close()
    return seen, seen


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from sklearn.metrics import roc_auc_score

    from bundle.data import CachedImageDataset, check_splits, default_num_workers, load_splits
    from bundle.data.splits import patient_split
    from bundle.distill import TAKDDistiller, TeacherOutputCache, with_sample_index
    from bundle.losses import HardLabelLoss, SoftLabelLoss
    from bundle.networks import ThreeConvStudent

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)  # progress lines
    torch.set_num_threads(args.threads)
    phases = Phases(set(args.phases.split(",")) if args.phases != "all" else None)
    folder = Path(args.folder)
    splits = phases.run("read", args.records, lambda: load_splits(args.dataset, folder, seed=0))
    all_records = splits.all
    phases.run("split", len(all_records), lambda: patient_split(all_records, {"train": 0.7, "validation": 0.1,
                                                                              "test": 0.2}, seed=0), repeats=3)
    phases.results["read"]["seconds"] -= phases.results["split"]["seconds"]  # load_splits also split them
    read = phases.results["read"]
    read["records_per_s"] = read["records"] / read["seconds"]
    read["us_per_record"] = 1e6 * read["seconds"] / read["records"]
    phases.run("check", len(all_records), lambda: check_splits(splits, mode="quick", require_chest=True))
    train = with_sample_index(splits.train)
    teacher = None
    coverage = None
    if args.teacher_predictions and phases.wants("join"):
        teacher = phases.run("join", len(train), lambda: TeacherOutputCache.from_predictions(
            args.teacher_predictions, splits.train, splits.class_names, splits.task, missing="skip",
            dataset_dir=folder))
        covered = int(teacher.available.sum()) if teacher.available is not None else len(train)
        coverage = {"training_images": len(train), "with_soft_targets": covered, "labels_alone": len(train) - covered}
        phases.results["join"]["bytes_per_record"] = teacher.nbytes / max(len(train), 1)

    if not phases.wants("cache_train"):
        return _summary(args, splits, coverage, phases, 0, None, None)
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "student.json"))
    parser.update({"image_size": args.image_size, "output_dir": str(Path(args.workdir) / "outputs" / "student")})
    train_transform = parser.get_parsed_content("preprocessing#train")
    eval_transform = parser.get_parsed_content("preprocessing#eval")
    workers = default_num_workers(len(train)) if args.num_workers is None else args.num_workers
    cache_dir = Path(args.workdir) / "image_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    options = {"mode": args.image_cache, "budget": "auto", "dtype": "float16", "directory": cache_dir,
               "num_workers": workers}
    train_set = phases.run("cache_train", len(train), lambda: CachedImageDataset(train, train_transform,
                                                                                  name="training", **options))
    phases.results["cache_train"].update(mode=train_set.mode, bytes_per_record=train_set.nbytes / max(len(train), 1))
    validation_set = phases.run("cache_validation", len(splits.validation), lambda: CachedImageDataset(
        splits.validation, eval_transform, name="validation", **options))
    phases.results["cache_validation"].update(mode=validation_set.mode,
                                              bytes_per_record=validation_set.nbytes / max(len(splits.validation), 1))

    if phases.wants("augment"):  # what one DataLoader worker (one core) delivers from the cache: read + augment
        count = min(len(train_set), args.augment_samples)
        phases.run("augment", count, lambda: [train_set[i] for i in range(count)], repeats=3)

    torch.manual_seed(0)
    network = ThreeConvStudent(in_channels=1, out_channels=splits.num_classes)
    hard = HardLabelLoss(task=splits.task)
    if teacher is not None:
        distiller = TAKDDistiller(network, hard, teacher, soft_loss=SoftLabelLoss(splits.task, 20.0),
                                  weights={"hard": 1.0, "soft": 1.0, "feature": 0.0},
                                  input_shape=(1, args.image_size, args.image_size))
    else:
        from bundle.distill import NoTeacher
        distiller = NoTeacher(network, hard)
    batches = args.max_train_batches
    if not phases.wants("epoch"):
        return _summary(args, splits, coverage, phases, workers, train_set, validation_set)
    phases.run("epoch", None, lambda: _train_epoch(train_set, distiller, network, args.batch_size, workers,
                                                   batches, "training epoch"), workers=workers,
               full_epoch_records=len(train))
    if args.uncached_batches:
        uncached = CachedImageDataset(train, train_transform, mode="none", name="training (uncached)")
        phases.run("epoch_uncached", None, lambda: _train_epoch(
            uncached, distiller, network, args.batch_size, workers, args.uncached_batches, "uncached epoch"),
            workers=workers)

    def validate() -> tuple[int, float | None]:
        from torch.utils.data import DataLoader
        from bundle.console import ProgressLog

        loader = DataLoader(validation_set, batch_size=args.batch_size, shuffle=False, num_workers=workers)
        total = len(loader) if args.max_val_batches is None else min(len(loader), args.max_val_batches)
        log, probabilities, labels = ProgressLog("validation", total, unit="batches"), [], []
        network.eval()
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if index >= total:
                    break
                probabilities.append(torch.sigmoid(network(batch["image"])).numpy())
                labels.append(np.array(batch["label"]))  # a copy: a worker's tensor holds an open file
                log.update()
        log.close()
        y, p = np.concatenate(labels), np.concatenate(probabilities)
        aucs = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
        return float(np.mean(aucs)) if aucs else None, len(y)

    auc = phases.run("validation", None, validate)
    phases.results["validation"]["auc_macro"] = auc
    return _summary(args, splits, coverage, phases, workers, train_set, validation_set)


def _summary(args, splits, coverage, phases, workers, train_set, validation_set) -> dict[str, Any]:
    cache_bytes = sum(d.nbytes for d in (train_set, validation_set) if d is not None and d.mode == "memory")
    peak = _peak_rss()
    return {"records": args.records, "splits": {"train": len(splits.train), "validation": len(splits.validation),
                                                "test": len(splits.test)},
            "coverage": coverage, "phases": phases.results, "workers": workers,
            "memory_cache_gib": cache_bytes / GIB, "peak_rss_gib": peak["self_gib"],
            "peak_rss_workers_gib": peak["workers_gib"],
            "peak_rss_besides_cache_gib": peak["self_gib"] - cache_bytes / GIB}


# ------------------------------------------------------------------------------------ the report


def _size_of(text: str, dataset: str) -> int | None:
    return None if text.strip().lower() in ("full", "all") else int(text.replace(",", "").replace("_", ""))


def evaluate_targets(dataset: str, runs: list[dict[str, Any]], max_batches: int | None) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    if not runs:
        return targets
    smallest, largest = runs[0], runs[-1]
    if len(runs) > 1:
        for phase in PHASES:
            a, b = smallest["phases"].get(phase), largest["phases"].get(phase)
            if not a or not b or not a.get("us_per_record") or not b.get("us_per_record"):
                continue
            ratio = b["us_per_record"] / a["us_per_record"]
            targets.append({"target": f"{phase}: time per record at {largest['records']:,} records within "
                                      f"{FLAT_RATIO}x of {smallest['records']:,}", "value": round(ratio, 3),
                            "status": "PASS" if ratio <= FLAT_RATIO else "FAIL"})
        previous = runs[-2]
        ratio = largest["peak_rss_besides_cache_gib"] / max(previous["peak_rss_besides_cache_gib"], 1e-9)
        targets.append({"target": f"memory besides the image cache at {largest['records']:,} records within "
                                  f"{FLAT_RATIO}x of {previous['records']:,}", "value": round(ratio, 3),
                        "status": "PASS" if ratio <= FLAT_RATIO else "FAIL"})
    for run in runs:
        if dataset == "nih" and run["records"] >= 112_120:
            targets.append({"target": "peak resident memory at NIH's 112,120 records under 4 GiB (GiB)",
                            "value": round(run["peak_rss_gib"], 3),
                            "status": "PASS" if run["peak_rss_gib"] < 4 else "FAIL"})
            cheap = sum(run["phases"].get(p, {}).get("seconds", 0.0) for p in ("split", "check", "join"))
            targets.append({"target": "check + split + teacher join of the full NIH file under 60 s (s)",
                            "value": round(cheap, 2), "status": "PASS" if cheap < 60 else "FAIL"})
    epoch = largest["phases"].get("epoch")
    if epoch is None:
        return targets
    full = epoch["full_epoch_records"] * epoch["us_per_record"] / 1e6
    measured = max_batches is None
    targets.append({"target": f"one {largest.get('image_size', 64)} px epoch over the training split of "
                              f"{largest['records']:,} records under 30 minutes (s"
                              f"{'' if measured else ', estimated from the measured time per record'})",
                    "value": round(full, 1), "status": "PASS" if full < 1800 else "FAIL"})
    build = largest["phases"].get("cache_train")
    if build and build.get("mode") != "none":
        first = build["seconds"] + full  # the first epoch decodes every image into the cache, the next ones do not
        targets.append({"target": "the second epoch faster than the first, the cache on (first / second epoch time; "
                                  "the first builds the cache)", "value": round(first / full, 3),
                        "status": "PASS" if first > full else "FAIL"})
    uncached = largest["phases"].get("epoch_uncached")
    if uncached:
        targets.append({"target": "an epoch with the image cache faster than without (time per record without / with)",
                        "value": round(uncached["us_per_record"] / epoch["us_per_record"], 3),
                        "status": "PASS" if uncached["us_per_record"] > epoch["us_per_record"] else "FAIL"})
    return targets


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                               / GIB, 1),
            "load_average_start": [round(v, 2) for v in os.getloadavg()]}


def print_summary(dataset: str, runs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    print(f"\n{dataset}: time per record (microseconds) by phase and records")
    print(f"{'phase':18s}" + "".join(f"{run['records']:>12,}" for run in runs))
    for phase in PHASES:
        if any(phase in run["phases"] for run in runs):
            print(f"{phase:18s}" + "".join(
                f"{run['phases'][phase]['us_per_record']:>12,.1f}" if phase in run["phases"] else f"{'-':>12}"
                for run in runs))
    print(f"{'peak RSS GiB':18s}" + "".join(f"{run['peak_rss_gib']:>12.2f}" for run in runs))
    print(f"{'  besides cache':18s}" + "".join(f"{run['peak_rss_besides_cache_gib']:>12.2f}" for run in runs))
    flat = all(t["status"] == "PASS" for t in targets if "time per record" in t["target"])
    bounded = all(t["status"] == "PASS" for t in targets if "memory besides" in t["target"])
    if len(runs) > 1:
        print(f"time per record {'stays flat' if flat else 'does NOT stay flat'} (within {FLAT_RATIO}x) and memory "
              f"{'stays bounded' if bounded else 'is NOT bounded'} as the records grow from {runs[0]['records']:,} "
              f"to {runs[-1]['records']:,}")
    for row in targets:
        print(f"{row['status']:4s}  {row['target']}: {row['value']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(LABEL_FILES), default="nih")
    parser.add_argument("--sizes", default="10000,30000,full",
                        help="records per run, comma-separated; 'full' is the whole label file")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of real radiographs to link to")
    parser.add_argument("--teacher_predictions", default="default",
                        help="recorded teacher file ('default': NIH's CheXNet predictions; 'none')")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_train_batches", type=int, default=None, help="cut the epoch short (time per record kept)")
    parser.add_argument("--max_val_batches", type=int, default=None)
    parser.add_argument("--uncached_batches", type=int, default=0,
                        help="also time this many batches with image_cache none (what the cache saves)")
    parser.add_argument("--phases", default="all",
                        help="'all', or the phases to run: read,split,check,join (the cheap ones, for the full file) "
                             "[,cache_train,epoch]: read, split and check always run")
    parser.add_argument("--augment_samples", type=int, default=500,
                        help="training items read from the cache (augmented) in one process: a worker's rate")
    parser.add_argument("--image_cache", default="auto", choices=("auto", "memory", "disk", "none"))
    parser.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: chosen from the machine)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "cxr-benchmark-scale")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default docs/results/scale_<dataset>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.teacher_predictions == "default":
        default = TEACHER_FILES[args.dataset]
        args.teacher_predictions = str(default) if default is not None and default.is_file() else None
    elif args.teacher_predictions.lower() == "none":
        args.teacher_predictions = None
    if args.worker:
        result = worker(args)
        print(WORKER_MARK + json.dumps(result), flush=True)
        return 0

    label_file = LABEL_FILES[args.dataset]
    if not label_file.is_file():
        raise SystemExit(f"{label_file}: label file not found (set CXR_DATA_ROOT)")
    out = args.out or REPO_ROOT / "docs" / "results" / f"scale_{args.dataset}.json"
    report: dict[str, Any] = {"command": " ".join([".venv/bin/python", "scripts/benchmark_scale.py", *sys.argv[1:]]
                                                  if argv is None else ["scripts/benchmark_scale.py", *argv]),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                              "dataset": args.dataset, "label_file": str(label_file),
                              "teacher_predictions": args.teacher_predictions,
                              "settings": {k: getattr(args, k) for k in ("phases", "image_size", "batch_size",
                                                                          "max_train_batches", "max_val_batches",
                                                                          "uncached_batches", "image_cache",
                                                                          "num_workers", "threads")},
                              "runs": []}
    args.workdir.mkdir(parents=True, exist_ok=True)
    for text in args.sizes.split(","):
        size = _size_of(text, args.dataset)
        start = time.perf_counter()
        folder, records = build_folder(args.dataset, size, args.images, args.workdir)
        setup = time.perf_counter() - start
        print(f"\n== {args.dataset}: {records:,} records in {folder} (made in {setup:.1f} s; load "
              f"{os.getloadavg()[0]:.2f})", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dataset", args.dataset,
                   "--folder", str(folder), "--records", str(records), "--image_size", str(args.image_size),
                   "--batch_size", str(args.batch_size), "--threads", str(args.threads), "--workdir",
                   str(args.workdir), "--image_cache", args.image_cache,
                   "--teacher_predictions", args.teacher_predictions or "none",
                   "--uncached_batches", str(args.uncached_batches), "--phases", args.phases,
                   "--augment_samples", str(args.augment_samples)]
        for flag in ("max_train_batches", "max_val_batches", "num_workers"):
            if getattr(args, flag) is not None:
                command += [f"--{flag}", str(getattr(args, flag))]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        results = []
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
            for line in process.stdout:  # streamed: the worker's phases and progress lines as they come
                if line.startswith(WORKER_MARK):
                    results.append(line[len(WORKER_MARK):])
                else:
                    print("  " + line.rstrip(), flush=True)
        if process.returncode != 0 or not results:
            raise SystemExit(f"the run at {records:,} records failed (exit {process.returncode})")
        run = json.loads(results[-1])
        run.update(setup_seconds=setup, image_size=args.image_size,
                   load_average_end=[round(v, 2) for v in os.getloadavg()])
        report["runs"].append(run)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(args.workdir / "image_cache", ignore_errors=True)
    report["targets"] = evaluate_targets(args.dataset, report["runs"], args.max_train_batches)
    report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print_summary(args.dataset, report["runs"], report["targets"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
