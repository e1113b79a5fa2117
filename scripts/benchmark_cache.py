"""Epoch time of a distilling stage with the online teacher and with the teacher-output cache.

Trains the given stage for ``--epochs`` epochs twice, from the same teacher checkpoint:
once running the teacher every iteration (``teacher_cache: null``), once with the
cache (``teacher_cache: memory`` or ``disk``), and reports the mean training-epoch time
of each (validation excluded), the one-off time to build the cache, and the speed-up::

    python scripts/benchmark_cache.py --stage student --teacher teacher --image_size 128 \\
        --out docs/results/teacher_cache_cpu.json

Timing does not depend on the teacher's weights, so unless ``--teacher_ckpt`` is given
the teacher is freshly initialised (saved to ``<work_dir>/teacher.pt``). Augmentation is
switched off in both runs, which is the setting where cache and online teacher give
the same loss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from bundle.stages import stage_configs  # noqa: E402


def run(stage: str, overrides: dict[str, Any]) -> tuple[list[float], float]:
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=stage_configs(stage), meta_file="configs/metadata.json",
                              workflow_type="train", run_id="training", **overrides)
    workflow.initialize()  # reads (or generates) the data: not part of the comparison
    start = time.perf_counter()
    trainer = workflow.parser.get_parsed_content("train#trainer")  # builds the distiller (and the cache)
    setup_seconds = time.perf_counter() - start
    times: list[float] = []
    marks: dict[str, float] = {}
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: marks.__setitem__("start", time.perf_counter()))
    # the training part of the epoch only (validation runs later, on EPOCH_COMPLETED)
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: marks.__setitem__("last", time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: times.append(marks["last"] - marks["start"]))
    workflow.run()
    workflow.finalize()
    return times, setup_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="student", choices=("assistant", "student"))
    parser.add_argument("--teacher", default="teacher", choices=("teacher", "assistant"),
                        help="which stage's network is the frozen teacher")
    parser.add_argument("--teacher_ckpt", default=None)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--storage", default="memory", choices=("memory", "disk"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work_dir", default="outputs/benchmark_cache")
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON",
                        help="further config overrides for both runs, e.g. max_images=64")
    args = parser.parse_args(argv)

    os.chdir(REPO_ROOT)
    work = Path(args.work_dir)
    common = {"dataset": args.dataset, "dataset_dir": args.dataset_dir, "image_size": args.image_size,
              "batch_size": args.batch_size, "max_epochs": args.epochs, "device": args.device,
              "augment": False, "resume": False, "check_data": "off",
              **{key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}}
    checkpoint = args.teacher_ckpt
    if checkpoint is None:
        from monai.bundle import ConfigParser

        config = ConfigParser()
        config.read_config(stage_configs(args.teacher))
        config.update({**common, "output_dir": str(work / "teacher")})
        network = config.get_parsed_content("network_def")
        checkpoint = str(work / "teacher.pt")
        work.mkdir(parents=True, exist_ok=True)
        torch.save(network.state_dict(), checkpoint)
    key = f"{args.teacher}_ckpt"
    results = {}
    for mode in (None, args.storage):
        name = "online" if mode is None else f"cache ({mode})"
        times, setup = run(args.stage, {**common, key: checkpoint, "teacher_cache": mode,
                                        "output_dir": str(work / (mode or "online"))})
        results[name] = {"epoch_seconds": times, "mean_epoch_seconds": statistics.fmean(times),
                         "setup_seconds": setup}
        print(f"{name}: epochs {[round(t, 1) for t in times]} s, building the trainer (incl. cache) {setup:.1f} s",
              flush=True)
    speedup = results["online"]["mean_epoch_seconds"] / results[f"cache ({args.storage})"]["mean_epoch_seconds"]
    report = {
        "command": " ".join(["python", "scripts/benchmark_cache.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": vars(args), "results": results, "epoch_speedup": speedup,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"training-epoch speed-up with the cache: {speedup:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
