"""Teacher -> assistant -> student on a real data set: the paper's Table 1, with seeds.

Trains and tests, for each seed: the teacher, the assistant (from the teacher), the
student alone, the student from the teacher and the student from the assistant, each
with the bundle's own configs (``configs/<stage>.json`` + ``configs/evaluate.json``),
and reports test AUC, accuracy and F1 (mean and std over seeds), the validation AUC of the
epoch that was kept (PneumoniaMNIST's test split is shifted from its training and validation
splits, so the two can rank models differently), parameters and training time::

    python scripts/benchmark_takd.py --dataset pneumoniamnist --dataset_dir ../shared/data/pneumoniamnist \\
        --seeds 3 --out docs/results/takd_pneumoniamnist.json

The JSON is rewritten after every model, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from bundle.stages import stage_configs  # noqa: E402
PER_CLASS = ("precision", "recall", "f1")

# (name, stage config, which checkpoint it learns from)
MODELS = (
    ("teacher", "teacher", None),
    ("assistant", "assistant", ("teacher_ckpt", "teacher")),
    ("student alone", "student", None),
    ("student from teacher", "student", ("teacher_ckpt", "teacher")),
    ("student from assistant", "student", ("assistant_ckpt", "assistant")),
)


def run_workflow(config_file: Any, run_id: str, overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigWorkflow

    if run_id == "training":
        # a benchmark measures: never resume a run left in the work folder, which may have had other settings
        # (the stages resume by default, and a finished run would be evaluated as it was, untrained)
        overrides = {"resume": False, **overrides}
    workflow = ConfigWorkflow(config_file=config_file, meta_file="configs/metadata.json",
                              workflow_type="train" if run_id == "training" else "eval", run_id=run_id, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def train_and_test(stage: str, output_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    settings = {**overrides, "output_dir": str(output_dir)}
    start = time.perf_counter()
    workflow = run_workflow(stage_configs(stage), "training", settings)
    seconds = time.perf_counter() - start
    network = workflow.parser.get_parsed_content("validated_network")
    run_workflow(stage_configs(stage, "configs/evaluate.json"), "evaluating", settings)
    metrics = json.loads((output_dir / "eval" / "metrics.json").read_text())
    validation = json.loads((output_dir / "metrics.json").read_text())  # the best epoch's, which chose model.pt
    return {
        "val_auc_macro": validation["auc_macro"],
        "val_accuracy": validation["accuracy"],
        "auc_macro": metrics["auc_macro"],
        "accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "precision_macro": metrics["precision_macro"],
        "recall_macro": metrics["recall_macro"],
        "parameters": sum(p.numel() for p in network.parameters()),
        "train_seconds": round(seconds, 1),
        "per_class": {name: {key: metrics[f"{key}/{name}"] for key in PER_CLASS} for name in metrics["class_names"]},
    }


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and std over seeds of the values that exist (a metric is None where undefined, e.g. AUC of one class)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary = {}
    for name, results in runs.items():
        row: dict[str, Any] = {"seeds": len(results), "parameters": results[0]["parameters"]}
        for key in ("auc_macro", "accuracy", "f1_macro", "val_auc_macro", "val_accuracy", "train_seconds"):
            row[key], row[f"{key}_std"] = _mean_std([r.get(key) for r in results])
        if all("per_class" in r for r in results):
            row["per_class"] = {
                cls: {key: dict(zip(("mean", "std"), _mean_std([r["per_class"][cls][key] for r in results])))
                      for key in PER_CLASS}
                for cls in results[0]["per_class"]
            }
        summary[name] = row
    return summary


def per_class_table(summary: dict[str, dict[str, Any]]) -> str:
    """The paper's Table 2: precision, recall and F1 of every class, for every model."""
    lines = ["| model | class | precision | recall | F1 |", "| --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        for cls, values in r.get("per_class", {}).items():
            cells = " | ".join(_cell(values[k]["mean"], values[k]["std"]) for k in PER_CLASS)
            lines.append(f"| {name} | {cls} | {cells} |")
    return "\n".join(lines)


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | test AUC | accuracy | F1 (macro) | validation AUC | parameters | training time (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        lines.append(
            f"| {name} | {_cell(r['auc_macro'], r['auc_macro_std'])} | {_cell(r['accuracy'], r['accuracy_std'])} "
            f"| {_cell(r['f1_macro'], r['f1_macro_std'])} | {_cell(r.get('val_auc_macro'), r.get('val_auc_macro_std'))} "
            f"| {r['parameters']:,} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0, help="run seeds first_seed .. first_seed + seeds - 1")
    parser.add_argument("--out", default="docs/results/takd.json")
    parser.add_argument("--work_dir", default="outputs/benchmark_takd")
    parser.add_argument("--image_size", type=int, default=32,
                        help="28 px MedMNIST images are resized to this (MONAI EfficientNet-B0 needs >= 32)")
    parser.add_argument("--teacher_image_size", type=int, default=None,
                        help="teacher and assistant train at this size and the students see them at it (the students' "
                             "own images stay at --image_size; the student alone gets the same images); default: "
                             "--image_size")
    parser.add_argument("--teacher_epochs", type=int, default=8)
    parser.add_argument("--assistant_epochs", type=int, default=8)
    parser.add_argument("--student_epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_images", type=int, default=None, help="cap per split, for a quick check")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sampling", default="oversample", choices=("none", "oversample", "undersample"),
                        help="class balancing of every stage's training loader (the paper over/under-samples)")
    parser.add_argument("--init", nargs="*", default=[], metavar="STAGE=PATH",
                        help="start a stage's network from weights (its init_checkpoint), e.g. teacher=teacher.pt "
                             "assistant=densenet121.pt: pretrained teachers, as in the paper")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON",
                        help="further config overrides for every stage, e.g. temperature=10")
    parser.add_argument("--models", nargs="*", default=[m[0] for m in MODELS])
    args = parser.parse_args(argv)

    os.chdir(REPO_ROOT)
    out = Path(args.out)
    epochs = {"teacher": args.teacher_epochs, "assistant": args.assistant_epochs, "student": args.student_epochs}
    teacher_size = args.teacher_image_size or args.image_size
    sizes = {"teacher": {"image_size": teacher_size}, "assistant": {"image_size": teacher_size},
             "student": {"image_size": args.image_size, "teacher_image_size": teacher_size}}
    extra = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    init = dict(item.split("=", 1) for item in args.init)
    unknown = set(init) - set(epochs)
    if unknown:
        parser.error(f"--init: unknown stages {sorted(unknown)}; stages: {sorted(epochs)}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_dir = Path(args.work_dir) / f"seed{seed}"
        for name, stage, source in MODELS:
            if name not in args.models:
                continue
            overrides: dict[str, Any] = {
                "dataset": args.dataset, "dataset_dir": args.dataset_dir, **sizes[stage],
                "batch_size": args.batch_size, "max_epochs": epochs[stage], "seed": seed, "device": args.device,
                "max_images": args.max_images, "sampling": args.sampling, **extra,
            }
            if source is not None:
                overrides[source[0]] = str(seed_dir / source[1] / "model.pt")
            if stage in init:
                overrides["init_checkpoint"] = init[stage]
            print(f"[seed {seed}] {name} ...", flush=True)
            result = train_and_test(stage, seed_dir / name.replace(" ", "_"), overrides)
            runs.setdefault(name, []).append({"seed": seed, **result})
            print(f"[seed {seed}] {name}: {json.dumps(result)}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "dataset": args.dataset,
                      "settings": vars(args), "runs": runs, "summary": summarise(runs)}
            out.write_text(json.dumps(report, indent=2))
    print(table(summarise(runs)))
    print(per_class_table(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
