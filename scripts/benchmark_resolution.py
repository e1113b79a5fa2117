"""MLCAK at each resolution: the low-resolution ViT student without and with distillation, and the ablations.

For each seed: trains the ViT teacher at ``--teacher_size`` (224 px), then, at every resolution
of ``--resolutions``, the student variants of ``--variants``:

* ``student (no KD)``: the student on hard labels alone (both heads);
* ``student + MLCAK``: distilled (findings logits, normal/abnormal logits, mean attention over
  all layers);
* ``MLCAK, last layer``: the attention term from the last layer only (the paper's single-layer
  ablation);
* ``MLCAK, one head``: findings head only (no normal/abnormal head, no MCCT term);
* ``no KD, one head``: (not run by default) the one-head student without distillation;
* ``student + recorded teacher``: with ``--teacher_predictions``, the student distilled from a
  recorded teacher's findings probabilities (any model's, e.g. CheXNet's DenseNet121 on NIH): the
  logit term of MLCAK (MSE of the findings logits); no attention term (it needs a live ViT
  teacher) and no normal/abnormal term (the recorded teacher has no such head). No ViT teacher
  is trained when no variant needs one.

Each model is trained with the bundle's configs (``configs/vit_teacher.json``,
``configs/vit_student.json``) and tested on the test split (``configs/evaluate.json``): macro AUC
of the findings head (MLCT) and of the normal/abnormal head (MCCT; derived by noisy-OR for
one-head models), mean and std over seeds. Each distilled variant's gain over the student without
distillation at the same resolution is paired by seed (mean and std of the per-seed gains) and by image
(:mod:`bundle.compare`, from each run's per-image probabilities, kept in the JSON: a 95% paired bootstrap
interval over the test images, resampled by patient, of the seed-mean gain, and DeLong's test of the
macro AUC difference; seeds with their own splits are resampled independently and combined). The explanations (each model's mean attention map
over all layers, upsampled to its input) are scored by the pointing game and the IoU of the
thresholded map with the boxes (:mod:`bundle.localization`): on the test phantoms when the data
set is ``synthetic`` / ``synthetic_binary``, and on NIH ChestX-ray14 images that have a
``BBox_List_2017`` box, when any is found under ``--nih_dir``::

    python scripts/benchmark_resolution.py --dataset cxr3 --dataset_dir ../shared/data/cxr3 \\
        --resolutions 112 56 28 --seeds 3 --out docs/results/resolution_cxr3.json
    python scripts/benchmark_resolution.py --dataset synthetic --resolutions 112 56 28 --seeds 3 \\
        --out docs/results/resolution_synthetic.json
    python scripts/benchmark_resolution.py --dataset nih --dataset_dir ../shared/data/nih14_subset \\
        --teacher_predictions ../shared/data/nih14_subset/teacher_predictions/chexnet_densenet121.csv \\
        --variants 'student (no KD)' 'student + recorded teacher' --split_seed 0 --seeds 3 \\
        --out docs/results/resolution_nih_recorded.json

The JSON is rewritten after every model, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

# this repository's bundle package first (a shared virtual environment may hold another checkout's), then
# the house helpers of scripts/benchmark_takd.py
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from benchmark_takd import REPO_ROOT, _cell, _mean_std, run_workflow, stage_configs  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "student (no KD)": {},
    "student + MLCAK": {"distil": True},
    "MLCAK, last layer": {"distil": True, "attention_layers": "last"},
    "MLCAK, one head": {"distil": True, "heads": 1},
    "no KD, one head": {"heads": 1},
    "student + recorded teacher": {"recorded": True},
}
DEFAULT_VARIANTS = ["student (no KD)", "student + MLCAK", "MLCAK, last layer", "MLCAK, one head"]
SCORES = ("mlct_auc", "mcct_auc", "pointing_game", "iou")


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def localization(network: Any, records: list[dict[str, Any]], image_size: int, device: str,
                 threshold: float) -> dict[str, Any]:
    from bundle.localization import attention_saliency, evaluate_saliency

    return evaluate_saliency(attention_saliency(network, "all"), records, image_size, device=device,
                             threshold=threshold)


def train_and_test(stage: str, output_dir: Path, overrides: dict[str, Any], image_size: int,
                   box_sets: dict[str, list[dict[str, Any]] | None], threshold: float) -> dict[str, Any]:
    """Train ``configs/<stage>.json``, test it, and score its attention maps on each set of boxed records."""
    import bundle

    settings = {**overrides, "output_dir": str(output_dir)}
    start = time.perf_counter()
    run_workflow(stage_configs(stage), "training", settings)
    seconds = time.perf_counter() - start
    evaluation = run_workflow(stage_configs(stage, "configs/evaluate.json"), "evaluating", settings)
    metrics = json.loads((output_dir / "eval" / "metrics.json").read_text())
    network = evaluation.parser.get_parsed_content("validated_network")  # the best checkpoint, loaded by evaluate.json
    from bundle.compare import read_per_image

    # 9 significant digits, as per_image.csv: a briefly trained network's probabilities differ in the 7th digit,
    # and rounding them into ties would change the AUCs recomputed from them
    scored = {head: read_per_image(output_dir / "eval", head) for head in ("mlct/", "mcct/")}
    result: dict[str, Any] = {
        "per_image": {"names": scored["mlct/"].images, "patient_ids": scored["mlct/"].patient_ids,
                      **{head: {"class_names": s.class_names, "labels": s.labels.astype(int).tolist(),
                                "masks": s.mask.astype(int).tolist(), "probabilities": [[float(f"{v:.9g}") for v in row] for row in s.probs[0]]}
                         for head, s in scored.items()}},
        "mlct_auc": metrics["mlct/auc_macro"],
        "mcct_auc": metrics["mcct/auc_macro"],
        "auc_macro": metrics["auc_macro"],
        "mcct_accuracy": metrics["mcct/accuracy"],
        "mlct_auc_per_finding": {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith("mlct/auc/")},
        "test_images": metrics["num_samples"],
        "train_seconds": round(seconds, 1),
        **bundle.networks.network_profile(network, (1, image_size, image_size)),
        "localization": {},
    }
    device = str(next(network.parameters()).device)
    for name, records in box_sets.items():
        if name == "phantoms" and records is None:
            records = evaluation.parser.get_parsed_content("data#splits").test
        if records:
            result["localization"][name] = localization(network, records, image_size, device, threshold)
    return result


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of both heads' AUC and the phantom localization scores, per model."""
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        row: dict[str, Any] = {"seeds": len(results), "parameters": results[0]["parameters"],
                               "gflops": results[0]["gflops"], "image_size": results[0]["input_shape"][-1]}
        for key in ("mlct_auc", "mcct_auc", "train_seconds"):
            row[key], row[f"{key}_std"] = _mean_std([r[key] for r in results])
        for boxes in sorted({b for r in results for b in r["localization"]}):
            scored = [r["localization"][boxes] for r in results if boxes in r["localization"]]
            row[f"{boxes}_images"] = scored[0]["images"]
            for key in ("pointing_game", "iou", "chance"):
                row[f"{boxes}_{key}"], row[f"{boxes}_{key}_std"] = _mean_std([s[key] for s in scored])
        summary[name] = row
    return summary


DISTILLED = ("student + MLCAK", "student + recorded teacher")
HEADS = {"mlct_auc": "mlct/", "mcct_auc": "mcct/"}


def _image_scores(result: dict[str, Any], head: str) -> Any:
    from bundle.compare import ImageScores

    kept = result.get("per_image")
    if not kept:
        return None
    part = kept[head]
    return ImageScores(kept["names"], kept["patient_ids"], part["labels"], part["masks"], part["probabilities"],
                       part["class_names"]).by_file_name()  # generated images: each run has its own copy


def paired_by_image(distilled: list[dict[str, Any]], base: dict[int, dict[str, Any]], head: str,
                    resamples: int) -> dict[str, Any] | None:
    """The seed-mean gain with its paired bootstrap interval over images and DeLong's test, from the runs' per-image
    probabilities (None where a run has none): seeds on the same test images are stacked (the same resampled images
    for all), seeds with their own splits resampled independently."""
    from bundle.compare import ImageScores, delong_sets, delong_test, paired_bootstrap_sets

    pairs = [(_image_scores(r, head), _image_scores(base[r["seed"]], head)) for r in distilled if r["seed"] in base]
    if resamples < 1 or not pairs or any(a is None or b is None for a, b in pairs):
        return None
    groups: dict[tuple[Any, ...], list[tuple[Any, Any]]] = {}
    for a, b in pairs:  # one test set: the same images with the same labels
        groups.setdefault((tuple(a.images), a.labels.tobytes(), a.mask.tobytes()), []).append((a, b))
    sets = [(ImageScores.stack([a for a, _ in group]), ImageScores.stack([b for _, b in group]))
            for group in groups.values()]
    boot = paired_bootstrap_sets(sets, resamples)
    delong = delong_test(*sets[0])["macro"] if len(sets) == 1 else delong_sets(sets)["macro"]
    return {"gain": boot["difference"], "ci_low": boot["ci_low"], "ci_high": boot["ci_high"], "resamples": resamples,
            "images": boot["images"], "test_sets": len(sets), "delong_p": delong["p"], "delong_z": delong["z"]}


def paired_gains(runs: dict[str, list[dict[str, Any]]], resolutions: list[int],
                 resamples: int = 1000) -> dict[str, dict[str, Any]]:
    """Per resolution and distilled variant: distilled minus undistilled student, seed by seed (mean, std, each),
    and by image (``paired``: :func:`paired_by_image`)."""
    gains: dict[str, dict[str, Any]] = {}
    for size in resolutions:
        base = {r["seed"]: r for r in runs.get(f"{size} px | student (no KD)", [])}
        for variant in DISTILLED:
            distilled = runs.get(f"{size} px | {variant}", [])
            if not distilled:
                continue
            label = f"{size} px" if variant == "student + MLCAK" else f"{size} px | {variant}"
            for key in ("mlct_auc", "mcct_auc"):
                diffs = [r[key] - base[r["seed"]][key] for r in distilled
                         if r["seed"] in base and r[key] is not None and base[r["seed"]][key] is not None]
                mean, std = _mean_std(diffs)
                gains.setdefault(label, {})[key] = {"mean": mean, "std": std, "seeds": len(diffs), "per_seed": diffs,
                                                    "paired": paired_by_image(distilled, base, HEADS[key], resamples)}
    return gains


def auc_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| resolution | model | MLCT macro AUC | MCCT macro AUC | seeds | parameters | GFLOPs | training (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        size, model = name.split(" | ", 1)
        lines.append(f"| {size} | {model} | {_cell(r['mlct_auc'], r['mlct_auc_std'])} | "
                     f"{_cell(r['mcct_auc'], r['mcct_auc_std'])} | {r['seeds']} | {r['parameters']:,} | "
                     f"{r['gflops']:.3g} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def localization_table(summary: dict[str, dict[str, Any]]) -> str:
    sets = sorted({k[: -len("_images")] for r in summary.values() for k in r if k.endswith("_images")})
    if not sets:
        return "(no boxes to score attention maps against)"
    lines = ["| boxes | resolution | model | pointing game | IoU (map >= 0.5 of its range) | chance | images |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for boxes in sets:
        for name, r in summary.items():
            if f"{boxes}_images" in r:
                size, model = name.split(" | ", 1)
                lines.append(f"| {boxes} | {size} | {model} | {_cell(r[f'{boxes}_pointing_game'], r[f'{boxes}_pointing_game_std'])} "
                             f"| {_cell(r[f'{boxes}_iou'], r[f'{boxes}_iou_std'])} | {r[f'{boxes}_chance']:.3f} "
                             f"| {r[f'{boxes}_images']} |")
    return "\n".join(lines)


def _paired_cells(paired: dict[str, Any] | None) -> str:
    if not paired:
        return " | "
    return f"[{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}] | {paired['delong_p']:.3f}"


def gains_table(gains: dict[str, dict[str, Any]]) -> str:
    lines = ["| resolution | distilled variant | MLCT AUC gain (distilled - no KD, paired by seed) | "
             "MLCT gain 95% CI (paired over images) | MLCT DeLong p | MCCT AUC gain | MCCT gain 95% CI | MCCT DeLong p "
             "| paired seeds | test images |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, g in gains.items():
        size, _, variant = label.partition(" | ")
        paired = g["mlct_auc"].get("paired")
        lines.append(f"| {size} | {variant or 'student + MLCAK'} | {_cell(g['mlct_auc']['mean'], g['mlct_auc']['std'])} | "
                     f"{_paired_cells(paired)} | {_cell(g['mcct_auc']['mean'], g['mcct_auc']['std'])} | "
                     f"{_paired_cells(g['mcct_auc'].get('paired'))} | {g['mlct_auc']['seeds']} | "
                     f"{paired['images'] if paired else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[112, 56, 28])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0, help="run seeds first_seed .. first_seed + seeds - 1")
    parser.add_argument("--out", default="docs/results/resolution.json")
    parser.add_argument("--work_dir", default="outputs/benchmark_resolution")
    parser.add_argument("--teacher_size", type=int, default=224, help="the teacher's input side (px)")
    parser.add_argument("--teacher_patch", type=int, default=16, help="the teacher's patch size (px)")
    parser.add_argument("--token_grid", type=int, default=7, help="the student's token grid (patch = size / grid)")
    parser.add_argument("--vit_size", type=_json_or_text, default="tiny",
                        help="tiny, small, base or a JSON dict (hidden_size, num_layers, num_heads, mlp_dim), both networks")
    parser.add_argument("--stem", default="conv", choices=("conv", "patch"),
                        help="both networks' stem: convolutional (default) or the plain patch embedding")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every student")
    parser.add_argument("--teacher_epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_images", type=int, default=None, help="cap per split, for a quick check")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sampling", default="none", choices=("none", "oversample", "undersample"))
    parser.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--teacher_predictions", default=None,
                        help="a recorded teacher's predictions file, for the 'student + recorded teacher' variant")
    parser.add_argument("--split_seed", type=int, default=None,
                        help="hold the patient-level split at this seed for every model (default: each seed its own)")
    parser.add_argument("--nih_dir", default=str(Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))),
                        help="folder with labels/nih_BBox_List_2017.csv.gz and NIH images (any depth)")
    parser.add_argument("--threshold", type=float, default=0.5, help="IoU: the map is kept above this fraction of its range")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000,
                        help="draws of each paired bootstrap of a gain over the test images (0: none)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out and train only the missing ones (same settings); e.g. "
                             "the ablations at one resolution only: --resume --resolutions 28 --variants 'MLCAK, last layer'")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON",
                        help="further config overrides for every model, e.g. loss_weights#attention=0.5")
    args = parser.parse_args(argv)

    if "student + recorded teacher" in args.variants and not args.teacher_predictions:
        parser.error("the 'student + recorded teacher' variant needs --teacher_predictions")
    os.chdir(REPO_ROOT)
    from bundle.data import load_splits
    from bundle.localization import nih_box_records

    out = Path(args.out)
    extra = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    box_sets: dict[str, list[dict[str, Any]] | None] = {}
    if args.dataset.startswith("synthetic"):
        box_sets["phantoms"] = None  # each model's own test split, read from its config
    own: list[dict[str, Any]] = []
    if not args.dataset.startswith("synthetic"):  # a data set whose own records have boxes (NIH's folder)
        every = load_splits(args.dataset, args.dataset_dir, seed=args.split_seed or 0, max_images=args.max_images)
        own = [r for r in every.train + every.validation + every.test if r.get("boxes")]
    if own:
        box_sets["dataset"] = own
        nih_note = f"{len(own)} images of {args.dataset_dir} with boxes"
    else:
        nih_csv = Path(args.nih_dir) / "labels" / "nih_BBox_List_2017.csv.gz"
        nih = nih_box_records(nih_csv, args.nih_dir) if nih_csv.is_file() else []
        if nih:
            box_sets["nih"] = nih
        nih_note = (f"{len(nih)} NIH images with boxes under {args.nih_dir}" if nih else
                    f"no NIH image under {args.nih_dir} has a box in "
                    f"{nih_csv.name if nih_csv.is_file() else '(no box list)'}")
    print(f"localization: {', '.join(box_sets) or 'none'} ({nih_note})", flush=True)

    common = {"dataset": args.dataset, "dataset_dir": args.dataset_dir, "batch_size": args.batch_size,
              "device": args.device, "max_images": args.max_images, "sampling": args.sampling,
              "vit_size": args.vit_size, "stem": args.stem}
    live_teacher = any(VARIANTS[v].get("distil") for v in args.variants)
    runs: dict[str, list[dict[str, Any]]] = {}
    commands: list[str] = []
    if args.resume and out.is_file():
        previous = json.loads(out.read_text())
        runs = previous["runs"]
        commands = previous.get("commands") or [previous["command"]]
        print(f"resuming: {sum(map(len, runs.values()))} runs from {out}", flush=True)
    commands.append(shlex.join([Path(sys.executable).name, *sys.argv]))

    def done(name: str, seed: int) -> bool:
        return any(r["seed"] == seed for r in runs.get(name, []))

    def all_resolutions() -> list[int]:
        return sorted({int(name.split(" px")[0]) for name in runs if not name.endswith("| teacher")}, reverse=True)

    def record(name: str, seed: int, result: dict[str, Any]) -> None:
        runs.setdefault(name, []).append({"seed": seed, **result})
        print(f"[seed {seed}] {name}: MLCT AUC {result['mlct_auc']}, MCCT AUC {result['mcct_auc']}, "
              f"localization {json.dumps({k: {m: v[m] for m in ('pointing_game', 'iou')} for k, v in result['localization'].items()})}",
              flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = {"command": commands[0], "commands": commands, "dataset": args.dataset,
                  "settings": vars(args), "localization_sets": nih_note, "runs": runs, "summary": summarise(runs),
                  "gains": paired_gains(runs, all_resolutions(), args.bootstrap_resamples)}
        out.write_text(json.dumps(report, indent=2))

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_dir = Path(args.work_dir) / f"seed{seed}"
        teacher_dir = seed_dir / "teacher"
        teacher_name = f"{args.teacher_size} px | teacher"
        split = {"split_seed": seed if args.split_seed is None else args.split_seed}
        if live_teacher and not (done(teacher_name, seed) and (teacher_dir / "model.pt").is_file()):
            print(f"[seed {seed}] teacher at {args.teacher_size} px ...", flush=True)
            teacher = train_and_test("vit_teacher", teacher_dir, {
                **common, "image_size": args.teacher_size, "patch_size": args.teacher_patch,
                "max_epochs": args.teacher_epochs, "seed": seed, **split, **extra}, args.teacher_size, box_sets,
                args.threshold)
            runs[teacher_name] = [r for r in runs.get(teacher_name, []) if r["seed"] != seed]
            record(teacher_name, seed, teacher)
        for size in args.resolutions:
            for variant in args.variants:
                spec = VARIANTS[variant]
                overrides = {**common, "image_size": size, "token_grid": args.token_grid, "max_epochs": args.epochs,
                             "seed": seed, "teacher_image_size": args.teacher_size,
                             "teacher_patch_size": args.teacher_patch, "teacher_vit_size": args.vit_size,
                             "teacher_stem": args.stem,
                             "heads": spec.get("heads", 2), "attention_layers": spec.get("attention_layers", "all"),
                             "teacher_ckpt": str(teacher_dir / "model.pt") if spec.get("distil") else None, **split}
                if spec.get("recorded"):
                    overrides.update({"teacher_predictions": args.teacher_predictions, "teacher_image_size": size,
                                      "loss_weights": {"hard": 1.0, "mlct": 1.0, "mcct": 1.0, "attention": 0.0}})
                overrides.update(extra)
                name = f"{size} px | {variant}"
                if done(name, seed):
                    continue
                print(f"[seed {seed}] {name} ...", flush=True)
                folder = seed_dir / f"{size}px_{variant.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')}"
                record(name, seed, train_and_test("vit_student", folder, overrides, size, box_sets, args.threshold))
    summary = summarise(runs)
    print(auc_table(summary))
    print(gains_table(paired_gains(runs, all_resolutions(), args.bootstrap_resamples)))
    print(localization_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
