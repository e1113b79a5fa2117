"""Do the CNNs' Grad-CAM maps point at the findings, and does a distilled student look where its teacher looks?

For each seed, trains and tests on a data set with finding boxes (the synthetic phantoms) the
teacher, the 3-conv student alone and from the teacher, and the compact student alone and from
the teacher, each with the bundle's own configs (``configs/<stage>.json`` +
``configs/evaluate.json``, best checkpoint). Then, on the test split:

* localization of every model's Grad-CAM and Grad-CAM++ maps (``monai.visualize``, on the
  network's saliency layer of ``bundle.networks.NETWORKS``): for each finding, the map of that
  finding's class against that finding's boxes, by pointing game and IoU of the map's upper
  half (:func:`bundle.localization.class_localization`), with the chance level of the pointing
  game; NIH ChestX-ray14 images with a ``BBox_List_2017`` box are scored too when any is found
  under ``--nih_dir``;
* agreement of each student's maps with the teacher's maps of the same class on the same images
  (:func:`bundle.localization.map_agreement`: Pearson correlation, IoU of the upper halves,
  same peak), the student alone being the baseline for the distilled one;
* test macro AUC, so that a map is read next to how good the model is.

::

    python scripts/benchmark_saliency.py --seeds 3 --image_size 128 --out docs/results/saliency_synthetic.json

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_takd import REPO_ROOT, _cell, _mean_std, run_workflow, stage_configs  # noqa: E402

# (name, stage config, network in bundle.networks.NETWORKS, overrides; "<teacher>" = the teacher's checkpoint)
MODELS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("teacher", "teacher", "teacher", {}),
    ("student alone", "student", "student", {}),
    ("student from teacher", "student", "student", {"teacher_ckpt": "<teacher>"}),
    ("compact student alone", "compact_student", "compact_student", {"densenet161_ckpt": None}),
    ("compact student from teacher", "compact_student", "compact_student",
     {"densenet161_ckpt": None, "teacher_stage": "teacher", "teacher_checkpoint": "<teacher>"}),
)
# each distilled student, against its undistilled twin
PAIRS = {"student from teacher": "student alone", "compact student from teacher": "compact student alone"}
METHODS = ("gradcam", "gradcampp")


def train_and_test(stage: str, output_dir: Path, overrides: dict[str, Any], reuse: bool = False
                   ) -> tuple[dict[str, Any], Any]:
    """Train ``configs/<stage>.json`` (unless ``reuse`` and it was) and test its best checkpoint: (metrics, evaluation)."""
    settings = {**overrides, "output_dir": str(output_dir)}
    seconds = None
    if not (reuse and (output_dir / "model.pt").is_file()):
        start = time.perf_counter()
        run_workflow(stage_configs(stage), "training", settings)
        seconds = round(time.perf_counter() - start, 1)
    evaluation = run_workflow(stage_configs(stage, "configs/evaluate.json"), "evaluating", settings)
    metrics = json.loads((output_dir / "eval" / "metrics.json").read_text())
    return {"auc_macro": metrics["auc_macro"], "test_images": metrics.get("num_samples"),
            "train_seconds": seconds}, evaluation


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean and std over seeds of AUC, each method's localization and each student's agreement with the teacher."""
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        row: dict[str, Any] = {"seeds": len(results), "parameters": results[0]["parameters"]}
        row["auc_macro"], row["auc_macro_std"] = _mean_std([r["auc_macro"] for r in results])
        for boxes in sorted({b for r in results for b in r["localization"]}):
            for method in METHODS:
                scored = [r["localization"][boxes][method] for r in results if method in r["localization"].get(boxes, {})]
                for key in ("pointing_game", "iou", "chance"):
                    row[f"{boxes}_{method}_{key}"], row[f"{boxes}_{method}_{key}_std"] = _mean_std(
                        [s[key] for s in scored])
                row[f"{boxes}_{method}_pairs"] = scored[0]["images"] if scored else 0
        for method in METHODS:
            scored = [r["agreement_with_teacher"][method] for r in results if r.get("agreement_with_teacher")]
            for key in ("correlation", "iou", "same_peak", "flat"):
                if scored:
                    row[f"agreement_{method}_{key}"], row[f"agreement_{method}_{key}_std"] = _mean_std(
                        [s[key] for s in scored])
        summary[name] = row
    return summary


def localization_table(summary: dict[str, dict[str, Any]], boxes: str = "phantoms") -> str:
    lines = ["| model | test AUC | method | pointing game | IoU | chance | (image, finding) pairs |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in summary.items():
        for method in METHODS:
            if f"{boxes}_{method}_iou" not in row:
                continue
            lines.append(f"| {name} | {_cell(row['auc_macro'], row['auc_macro_std'])} | {method} | "
                         f"{_cell(row[f'{boxes}_{method}_pointing_game'], row[f'{boxes}_{method}_pointing_game_std'])} | "
                         f"{_cell(row[f'{boxes}_{method}_iou'], row[f'{boxes}_{method}_iou_std'])} | "
                         f"{_cell(row[f'{boxes}_{method}_chance'], row[f'{boxes}_{method}_chance_std'])} | "
                         f"{row[f'{boxes}_{method}_pairs']} |")
    return "\n".join(lines)


def agreement_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| student | method | correlation with the teacher's map | IoU of upper halves | same peak | a map flat |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in summary.items():
        for method in METHODS:
            if f"agreement_{method}_correlation" in row:
                lines.append(f"| {name} | {method} | "
                             + " | ".join(_cell(row[f"agreement_{method}_{k}"], row[f"agreement_{method}_{k}_std"])
                                          for k in ("correlation", "iou", "same_peak", "flat")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="a data set whose records have boxes (synthetic)")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=128, help="every model's input side (px)")
    parser.add_argument("--teacher_epochs", type=int, default=10)
    parser.add_argument("--student_epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_images", type=int, default=None, help="cap per split, for a quick check")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=[m[0] for m in MODELS], choices=[m[0] for m in MODELS])
    parser.add_argument("--threshold", type=float, default=0.5, help="IoU: a map is kept above this fraction of its range")
    parser.add_argument("--nih_dir", default=str(Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))),
                        help="folder with labels/nih_BBox_List_2017.csv.gz and NIH images (any depth)")
    parser.add_argument("--out", default="docs/results/saliency_synthetic.json")
    parser.add_argument("--work_dir", default="outputs/benchmark_saliency")
    parser.add_argument("--reuse", action="store_true",
                        help="models already trained under --work_dir (model.pt) are tested and scored, not retrained")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON",
                        help="further config overrides for every model, e.g. dataset_options={\"num_images\": 600}")
    args = parser.parse_args(argv)
    if "teacher" not in args.models and any("from teacher" in m for m in args.models):
        parser.error("the distilled students need the teacher: keep 'teacher' in --models")

    os.chdir(REPO_ROOT)
    from bundle.localization import cam_saliency, class_localization, map_agreement, nih_box_records
    from bundle.networks import NETWORKS, count_parameters

    out = Path(args.out)
    extra = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    nih_csv = Path(args.nih_dir) / "labels" / "nih_BBox_List_2017.csv.gz"
    nih = nih_box_records(nih_csv, args.nih_dir) if nih_csv.is_file() else []
    nih_note = (f"{len(nih)} NIH images with boxes under {args.nih_dir}" if nih else
                f"no NIH image under {args.nih_dir} has a box in {nih_csv.name if nih_csv.is_file() else '(no box list)'}")
    print(f"localization: test-split boxes{' and NIH' if nih else ''} ({nih_note})", flush=True)
    epochs = {"teacher": args.teacher_epochs, "student": args.student_epochs, "compact_student": args.student_epochs}
    runs: dict[str, list[dict[str, Any]]] = {}

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_dir = Path(args.work_dir) / f"seed{seed}"
        teacher_maps: dict[str, Any] = {}
        for name, stage, network_name, model_overrides in MODELS:
            if name not in args.models:
                continue
            overrides: dict[str, Any] = {
                "dataset": args.dataset, "dataset_dir": args.dataset_dir, "image_size": args.image_size,
                "batch_size": args.batch_size, "max_epochs": epochs[stage], "seed": seed, "device": args.device,
                "max_images": args.max_images, **extra,
                **{k: (str(seed_dir / "teacher" / "model.pt") if v == "<teacher>" else v)
                   for k, v in model_overrides.items()},
            }
            print(f"[seed {seed}] {name} ...", flush=True)
            result, evaluation = train_and_test(stage, seed_dir / name.replace(" ", "_"), overrides, args.reuse)
            network = evaluation.parser.get_parsed_content("validated_network")
            network.eval()
            records = evaluation.parser.get_parsed_content("data#splits").test
            class_names = [str(c) for c in evaluation.parser.get_parsed_content("data#class_names")]
            device = str(next(network.parameters()).device)
            layer = NETWORKS[network_name].saliency_layer
            box_sets = {"phantoms": [r for r in records if r.get("boxes")], **({"nih": nih} if nih else {})}
            if not box_sets["phantoms"]:
                raise SystemExit(f"{args.dataset}: no test record has boxes; Grad-CAM localization needs the phantoms")
            result.update({"parameters": count_parameters(network), "saliency_layer": layer, "localization": {}})
            maps = {method: cam_saliency(network, layer, method) for method in METHODS}
            for boxes, boxed in box_sets.items():
                result["localization"][boxes] = {
                    method: class_localization(maps[method], boxed, args.image_size, class_names, device=device,
                                               threshold=args.threshold) for method in METHODS}
            if name == "teacher":
                teacher_maps = maps
            elif teacher_maps:
                result["agreement_with_teacher"] = {
                    method: map_agreement(teacher_maps[method], maps[method], box_sets["phantoms"], args.image_size,
                                          args.image_size, class_names, device=device, threshold=args.threshold)
                    for method in METHODS}
            runs.setdefault(name, []).append({"seed": seed, **result})
            shown = {m: {k: result["localization"]["phantoms"][m][k] for k in ("pointing_game", "iou")} for m in METHODS}
            print(f"[seed {seed}] {name}: AUC {result['auc_macro']}, phantoms {json.dumps(shown)}"
                  + (f", agreement {json.dumps({m: result['agreement_with_teacher'][m]['correlation'] for m in METHODS})}"
                     if "agreement_with_teacher" in result else ""), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "dataset": args.dataset,
                      "settings": vars(args), "localization_sets": nih_note, "pairs": PAIRS, "runs": runs,
                      "summary": summarise(runs)}
            out.write_text(json.dumps(report, indent=2))
    summary = summarise(runs)
    print(localization_table(summary))
    print(agreement_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
