"""What distillation buys on real radiographs with a real teacher: the paper's Table 1 from a recorded teacher.

A strong teacher that does not run here (CheXNet's DenseNet121, trained on ~78,000 NIH images)
is given by its recorded predictions (``teacher_predictions``). For each seed, on one seeded
patient-level split held for every row (``--split_seed``), with the bundle's own configs
(``configs/<stage>.json`` + ``configs/evaluate.json``, best validation checkpoint):

* teacher: the recorded predictions scored on the same test images (nothing is trained);
* 3-conv student alone, and from the recorded teacher (soft labels at ``--temperature``);
* compact student (MobileNetV3-Large 0.75) alone, and from the recorded teacher;
* the TAKD chain with the real teacher on top: a DenseNet121 assistant learned from the recorded
  teacher, then the 3-conv student from that (live) assistant with soft labels and the
  Wasserstein feature term.

Reported per model (mean and std over seeds): test macro AUC with its 95% bootstrap interval,
per-class AUC, expected calibration error, macro F1 at the 0.5 threshold, parameters, training time,
and the number of images scored (every row of a table on the same images: ``--max_images`` caps the
teacher's as the students'). Each distilled model's gain over its undistilled twin is paired twice: by
seed (mean and std of the per-seed gains) and by image (:mod:`bundle.compare`: a 95% paired bootstrap
interval over the test images, resampled by patient, of the seed-mean gain, and DeLong's test of the
macro AUC difference), and the targets table says which criterion each gain meets (>= +0.03, more than
twice its seed std, an interval that excludes zero). Each run's per-image test probabilities are kept in
the JSON, so ``--merge`` recomputes every comparison without the models. With ``--external_dataset`` /
``--external_dataset_dir`` every model is tested on that data set too, all of it (or ``--max_images`` of
each of its splits), in its own columns; the teacher on the images its predictions file has rows for, or
"not scored" when it has none (a truly external set); ``--figure`` draws the macro AUCs with their
intervals; Grad-CAM of every CNN is scored against the radiologists' boxes of the data set
(pointing game, IoU; the assistant's maps are the live teacher's for map agreement).
``--checkpoint final`` tests each model's last epoch instead of its best validation epoch, and
``--ema_momentum`` makes every model validate and save a moving average of its weights::

    python scripts/benchmark_recorded.py --dataset_dir ../shared/data/nih14_subset \\
        --teacher_predictions ../shared/data/nih14_subset/teacher_predictions/chexnet_densenet121.csv \\
        --seeds 3 --out docs/results/recorded_nih.json --figure docs/results/recorded_nih.png

The JSON is rewritten after every model, so an interrupted run keeps what it finished; ``--reuse``
tests models already trained under ``--work_dir`` instead of training them again. A table split over
several processes or machines (``--first_seed``, ``--models``) is put back together with
``--merge a.json b.json ... --out table.json`` (runs of the same model and seed counted once; pieces run with
other settings that change the result, e.g. epochs or temperature, are refused).
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

NOT_SCORED = "not scored: the predictions file has no rows for these images"
#: settings that do not change a run's result (what a merge may differ in)
NEUTRAL_SETTINGS = {"merge", "seeds", "first_seed", "models", "out", "figure", "work_dir", "reuse", "no_localization",
                    "device", "bootstrap_resamples", "set", "ema_momentum"}

# (name, stage config, teacher: None | "recorded" | "assistant", size group, network in bundle.networks.NETWORKS)
MODELS: tuple[tuple[str, str, str | None, str, str], ...] = (
    ("3-conv student alone", "student", None, "student", "student"),
    ("3-conv student from recorded teacher", "student", "recorded", "student", "student"),
    ("compact student alone", "compact_student", None, "compact", "compact_student"),
    ("compact student from recorded teacher", "compact_student", "recorded", "compact", "compact_student"),
    ("assistant from recorded teacher", "assistant", "recorded", "assistant", "assistant"),
    ("3-conv student from assistant", "student", "assistant", "student", "student"),
)
TEACHER = "teacher (recorded predictions)"
# each distilled model against its undistilled twin, paired by seed
PAIRS = {"3-conv student from recorded teacher": "3-conv student alone",
         "compact student from recorded teacher": "compact student alone",
         "3-conv student from assistant": "3-conv student alone"}


def _scores(metrics: dict[str, Any], class_names: list[str], per_image: Any = None,
            names: list[str] | None = None) -> dict[str, Any]:
    """A run's metrics on one image set; with ``per_image`` (:class:`bundle.compare.ImageScores`) also its
    probabilities, one row per image of ``names`` (the table's image list; None where the run has none)."""
    keys = ("auc_macro", "auc_macro_ci_low", "auc_macro_ci_high", "ece_macro", "accuracy", "f1_macro")
    scores = {**{k: metrics.get(k) for k in keys}, "num_samples": metrics.get("num_samples"),
              "per_class_auc": {c: metrics.get(f"auc/{c}") for c in class_names},
              "per_class_ece": {c: metrics.get(f"ece/{c}") for c in class_names}}
    if per_image is not None and names is not None:
        row = {name: i for i, name in enumerate(per_image.images)}
        if not any(n in row for n in names):  # the same images under another path: by file name
            row = {os.path.basename(name): i for i, name in enumerate(per_image.images)}
            names = [os.path.basename(n) for n in names]
        scores["probabilities"] = [[float(f"{p:.9g}") for p in per_image.probs[0, row[n]]] if n in row else None
                                   for n in names]
    return scores


def image_table(records: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """The images a table is scored on, with their patients, labels and masks (the runs' probabilities are aligned
    to ``names``)."""
    from bundle.distill.recorded import record_id

    return {"names": [record_id(r) for r in records], "patient_ids": [str(r.get("patient_id") or record_id(r))
                                                                      for r in records],
            "labels": [[float(v) for v in r["label"]] for r in records],
            "masks": [[float(v) for v in r.get("label_mask", [1.0] * len(class_names))] for r in records]}


def image_scores(images: dict[str, Any], results: list[dict[str, Any]], where: str, class_names: list[str]) -> Any:
    """The runs' per-image probabilities on ``where`` as one :class:`bundle.compare.ImageScores` (runs stacked), on
    the images every run scored; None when a run has none kept."""
    import numpy as np

    from bundle.compare import ImageScores

    kept = [r[where]["probabilities"] for r in results if r.get(where) and r[where].get("probabilities")]
    if not kept or len(kept) != sum(1 for r in results if r.get(where)):
        return None
    rows = [i for i in range(len(images["names"])) if all(k[i] is not None for k in kept)]
    return ImageScores([images["names"][i] for i in rows], [images["patient_ids"][i] for i in rows],
                       np.asarray([images["labels"][i] for i in rows]), np.asarray([images["masks"][i] for i in rows]),
                       np.asarray([[k[i] for i in rows] for k in kept]), list(class_names))


def _clean(value: Any) -> Any:
    """NaN (an AUC of a class without positives) as None, so the JSON stays JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def evaluate(stage: str, settings: dict[str, Any], eval_dir: Path, bootstrap_keys: list[str],
             resamples: int) -> tuple[dict[str, Any], Any]:
    workflow = run_workflow(stage_configs(stage, "configs/evaluate.json"), "evaluating",
                            {**settings, "eval_dir": str(eval_dir), "bootstrap_keys": bootstrap_keys,
                             "bootstrap_resamples": resamples})
    return json.loads((eval_dir / "metrics.json").read_text()), workflow


def per_image(eval_dir: Path) -> Any:
    from bundle.compare import read_per_image

    return read_per_image(eval_dir / "per_image.csv")


def score_teacher(predictions: str, records: list[dict[str, Any]], class_names: list[str], task: str,
                  resamples: int, seed: int = 0) -> dict[str, Any] | None:
    """The recorded teacher's metrics on ``records`` (the rows it has), with bootstrap intervals and its per-image
    probabilities; None when the file has no row for any of them (a truly external data set)."""
    import numpy as np

    from bundle.compare import ImageScores
    from bundle.data.errors import CXRDataError
    from bundle.distill import read_teacher_predictions
    from bundle.distill.recorded import record_id
    from bundle.metrics import bootstrap_intervals, classification_metrics, probabilities

    try:
        logits, available = read_teacher_predictions(predictions, records, class_names, task, missing="skip")
    except CXRDataError as error:
        if "no row matches" in str(error):
            return None
        raise
    if not available.any():
        return None
    labels = np.asarray([r["label"] for r in records], np.float32)[available]
    masks = np.asarray([r.get("label_mask", [1.0] * len(class_names)) for r in records], np.float32)[available]
    probs = probabilities(logits[available], task)
    metrics = classification_metrics(labels, probs, masks, task, class_names)["scalars"]
    intervals = bootstrap_intervals(
        lambda rows: classification_metrics(labels[rows], probs[rows], masks[rows], task, class_names,
                                            details=False)["scalars"],
        len(labels), ["auc_macro"], resamples, 0.95, seed)
    metrics["auc_macro_ci_low"], metrics["auc_macro_ci_high"] = intervals["auc_macro"]
    metrics["num_samples"] = int(available.sum())
    names = [record_id(r) for r in records]
    kept = [name for name, has in zip(names, available) if has]
    scores = ImageScores(kept, [], labels, masks, probs, list(class_names))
    return _scores(metrics, class_names, scores, names)


def paired_comparison(images: dict[str, Any], runs: list[dict[str, Any]], base: list[dict[str, Any]], where: str,
                      class_names: list[str], resamples: int) -> dict[str, Any] | None:
    """The distilled runs against their twin's on the same images (:func:`bundle.compare.compare`): the seed-mean
    macro AUC gain with its paired bootstrap interval over images (by patient) and DeLong's test; None without
    per-image probabilities."""
    from bundle.compare import compare

    if not images or resamples < 1:
        return None
    seeds = {r["seed"] for r in runs} & {r["seed"] for r in base}  # paired by seed as well: the seeds both have
    runs, base = [r for r in runs if r["seed"] in seeds], [r for r in base if r["seed"] in seeds]
    if not runs:
        return None
    a, b = image_scores(images, runs, where, class_names), image_scores(images, base, where, class_names)
    if a is None or b is None:
        return None
    result = compare(a, b, resamples=resamples)
    delong = result["delong"]
    return {"images": result["images"], "patients": result["patients"], "runs": [a.runs, b.runs],
            "gain": result["bootstrap"]["difference"], "ci_low": result["bootstrap"]["ci_low"],
            "ci_high": result["bootstrap"]["ci_high"], "resamples": resamples,
            "p_bootstrap": result["bootstrap"]["p_bootstrap"],
            "delong": {"p": delong["macro"]["p"], "z": delong["macro"]["z"], "se": delong["macro"]["se"],
                       "ci_low": delong["macro"]["ci_low"], "ci_high": delong["macro"]["ci_high"],
                       "classes": delong["macro"]["classes"], "method": delong["method"],
                       "per_class_p": {c: v["p"] for c, v in delong["per_class"].items()}}}


def summarise(runs: dict[str, list[dict[str, Any]]], class_names: list[str], images: dict[str, Any] | None = None,
              resamples: int = 1000) -> dict[str, dict[str, Any]]:
    from bundle.compare import criteria

    summary: dict[str, dict[str, Any]] = {}
    images = images or {}
    for name, results in runs.items():
        row: dict[str, Any] = {"seeds": len(results), "parameters": results[0].get("parameters")}
        for where in ("test", "external"):
            notes = [r[f"{where}_note"] for r in results if r.get(f"{where}_note")]
            if notes:
                row[f"{where}_note"] = notes[0]
            scored = [r[where] for r in results if r.get(where)]
            if not scored:
                continue
            for key in ("auc_macro", "auc_macro_ci_low", "auc_macro_ci_high", "ece_macro", "accuracy", "f1_macro"):
                row[f"{where}_{key}"], row[f"{where}_{key}_std"] = _mean_std([s[key] for s in scored])
            row[f"{where}_per_class_auc"] = {c: dict(zip(("mean", "std"), _mean_std(
                [s["per_class_auc"].get(c) for s in scored]))) for c in class_names}
            row[f"{where}_images"] = scored[0]["num_samples"]
            if where in images and scored[0]["num_samples"] != len(images[where]["names"]):
                row[f"{where}_note"] = (f"scored on the {scored[0]['num_samples']} of {len(images[where]['names'])} "
                                        f"images the predictions file has rows for")
        row["train_seconds"], row["train_seconds_std"] = _mean_std([r.get("train_seconds") for r in results])
        if name in PAIRS and PAIRS[name] in runs:
            base = {r["seed"]: r for r in runs[PAIRS[name]]}
            for where in ("test", "external"):
                gains = [r[where]["auc_macro"] - base[r["seed"]][where]["auc_macro"] for r in results
                         if r.get(where) and r["seed"] in base and base[r["seed"]].get(where)]
                if gains:
                    row[f"{where}_gain"], row[f"{where}_gain_std"] = _mean_std(gains)
                    row[f"{where}_gain_per_seed"] = gains
                    paired = paired_comparison(images.get(where, {}), results, runs[PAIRS[name]], where, class_names,
                                               resamples)
                    if paired:
                        row[f"{where}_gain_paired"] = paired
                    row[f"{where}_gain_criteria"] = criteria(
                        row[f"{where}_gain"], row[f"{where}_gain_std"] if len(gains) > 1 else None,
                        (paired["ci_low"], paired["ci_high"]) if paired else None)
        if any("localization" in r for r in results):
            scored = [r["localization"] for r in results if r.get("localization")]
            for key in ("pointing_game", "iou", "chance"):
                row[f"boxes_{key}"], row[f"boxes_{key}_std"] = _mean_std([s[key] for s in scored])
            row["boxes_pairs"] = scored[0]["images"]
            agreement = [r["agreement_with_assistant"] for r in results if r.get("agreement_with_assistant")]
            if agreement:
                row["agreement_correlation"], row["agreement_correlation_std"] = _mean_std(
                    [a["correlation"] for a in agreement])
        summary[name] = row
    return summary


def _interval(paired: dict[str, Any] | None) -> str:
    if not paired:
        return ""
    return f"[{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}]"


def _delong(paired: dict[str, Any] | None) -> str:
    return f"{paired['delong']['p']:.3f}" if paired else ""


def table(summary: dict[str, dict[str, Any]], external: bool) -> str:
    """One row per model; the gains paired by seed (mean ± std of per-seed gains) and by image (95% paired
    bootstrap interval of the seed-mean gain over the images, and DeLong's p of the macro AUC difference)."""
    head = ("| model | test images | test macro AUC | 95% CI (mean of seeds) | gain over alone (paired by seed) | "
            "gain 95% CI (paired over images) | DeLong p | ECE (macro) | macro F1 (threshold 0.5) |")
    rule = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    if external:
        head += " external images | external macro AUC | external 95% CI | external gain | external gain 95% CI |"
        rule += " --- | --- | --- | --- | --- |"
    lines = [head + " parameters | training time (s) |", rule + " --- | --- |"]
    for name, r in summary.items():
        has = "test_auc_macro" in r
        cells = [name, str(r.get("test_images", "")),
                 _cell(r.get("test_auc_macro"), r.get("test_auc_macro_std")) if has else r.get("test_note", "n/a"),
                 f"[{r['test_auc_macro_ci_low']:.3f}, {r['test_auc_macro_ci_high']:.3f}]" if has else "",
                 _cell(r.get("test_gain"), r.get("test_gain_std")) if "test_gain" in r else "",
                 _interval(r.get("test_gain_paired")), _delong(r.get("test_gain_paired")),
                 _cell(r.get("test_ece_macro"), r.get("test_ece_macro_std")) if has else "",
                 _cell(r.get("test_f1_macro"), r.get("test_f1_macro_std")) if has else ""]
        if external:
            has = "external_auc_macro" in r
            cells += [str(r.get("external_images", "")),
                      _cell(r.get("external_auc_macro"), r.get("external_auc_macro_std")) if has
                      else r.get("external_note", "n/a"),
                      f"[{r['external_auc_macro_ci_low']:.3f}, {r['external_auc_macro_ci_high']:.3f}]" if has else "",
                      _cell(r.get("external_gain"), r.get("external_gain_std")) if "external_gain" in r else "",
                      _interval(r.get("external_gain_paired"))]
        params = r.get("parameters")
        cells += [f"{params:,}" if params else "-", f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{name} ({where}): {r[f'{where}_note']}" for name, r in summary.items() for where in ("test", "external")
             if r.get(f"{where}_note")]
    return "\n".join(lines + [f"\n{note}" for note in notes])


def criteria_table(summary: dict[str, dict[str, Any]]) -> str:
    """Which target each gain meets: >= +0.03, more than twice its seed std, a paired interval over images
    that excludes zero (yes / no; '-' where it cannot be judged: one seed, or no per-image probabilities)."""
    lines = ["| distilled model | on | gain (mean of seeds) | gain >= +0.03 | gain > 2x seed std | "
             "95% interval over images excludes 0 | DeLong p (macro AUC) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        for where in ("test", "external"):
            met = r.get(f"{where}_gain_criteria")
            if not met:
                continue
            marks = ["-" if v is None else ("yes" if v else "no") for v in met.values()]
            paired = r.get(f"{where}_gain_paired")
            lines.append(f"| {name} | {where} ({r.get(f'{where}_images')} images) | "
                         f"{_cell(r[f'{where}_gain'], r[f'{where}_gain_std'])} | {marks[0]} | {marks[1]} | "
                         f"{marks[2]}{' ' + _interval(paired) if paired else ''} | {_delong(paired)} |")
    return "\n".join(lines)


def per_class_table(summary: dict[str, dict[str, Any]], class_names: list[str], where: str = "test") -> str:
    names = list(summary)
    lines = ["| finding | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for c in class_names:
        cells = [_cell(summary[n][f"{where}_per_class_auc"][c]["mean"], summary[n][f"{where}_per_class_auc"][c]["std"])
                 if f"{where}_per_class_auc" in summary[n] else "n/a" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def localization_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | pointing game | IoU | chance | (image, finding) pairs | correlation with the assistant's map |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        if "boxes_iou" in r:
            lines.append(f"| {name} | {_cell(r['boxes_pointing_game'], r['boxes_pointing_game_std'])} | "
                         f"{_cell(r['boxes_iou'], r['boxes_iou_std'])} | {_cell(r['boxes_chance'], r['boxes_chance_std'])}"
                         f" | {r['boxes_pairs']} | "
                         + (_cell(r['agreement_correlation'], r['agreement_correlation_std'])
                            if "agreement_correlation" in r else "") + " |")
    return "\n".join(lines)


def figure(runs: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """Macro AUC of every model, each seed with its 95% interval, internal and external side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    places = [w for w in ("test", "external") if any(r.get(w) for rs in runs.values() for r in rs)]
    fig, axes = plt.subplots(1, len(places), figsize=(6.5 * len(places), 0.55 * len(names) + 1.6), sharey=True,
                             squeeze=False)
    for axis, where in zip(axes[0], places):
        for row, name in enumerate(names):
            scored = [r[where] for r in runs[name] if r.get(where)]
            for k, s in enumerate(scored):
                y = row + (k - (len(scored) - 1) / 2) * 0.12
                axis.errorbar(s["auc_macro"], y, xerr=[[s["auc_macro"] - s["auc_macro_ci_low"]],
                                                       [s["auc_macro_ci_high"] - s["auc_macro"]]],
                              fmt="o", color="tab:red" if name == TEACHER else "tab:blue", ms=4, capsize=2, lw=1)
            if scored:
                mean = sum(s["auc_macro"] for s in scored) / len(scored)
                axis.plot([mean, mean], [row - 0.3, row + 0.3], color="black", lw=2)
        axis.axvline(0.5, color="grey", lw=0.8, ls=":")
        axis.set_yticks(range(len(names)), names)
        axis.set_xlabel(f"{where} macro AUC")
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # once: the axes share y, and the first model goes on top
    fig.suptitle(f"{title}\ndots: one seed each, with its 95% bootstrap interval; black bar: mean over seeds",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def effective_settings(report: dict[str, Any]) -> dict[str, Any]:
    """The settings of a report that change its results: every option but :data:`NEUTRAL_SETTINGS`, options it
    lacks (an older report) at their defaults, and each ``--set`` override (``--ema_momentum`` is one) by name."""
    defaults = {action.dest: action.default for action in build_parser()._actions if action.dest != "help"}
    given = {**defaults, **report.get("settings", {})}
    overrides = {f"--set {key}": json.loads(value) for key, value in (item.split("=", 1) for item in given.get("set") or [])}
    if given.get("ema_momentum"):
        overrides["--set ema_momentum"] = given["ema_momentum"]
    return {**{k: v for k, v in given.items() if k not in NEUTRAL_SETTINGS}, **overrides}


def check_mergeable(reports: list[dict[str, Any]], files: list[str]) -> None:
    """Refuse pieces of other data, splits or settings that change the result, naming the setting and both values."""
    first = effective_settings(reports[0])
    for path, report in zip(files[1:], reports[1:]):
        if report["class_names"] != reports[0]["class_names"] or report["split"] != reports[0]["split"]:
            raise SystemExit(f"{path}: its data or split differ from {files[0]}'s; merge runs of one table only")
        theirs = effective_settings(report)
        for key in sorted(set(first) | set(theirs)):
            if first.get(key) != theirs.get(key):
                raise SystemExit(f"{path}: its {key} is {theirs.get(key)!r}, {files[0]}'s is {first.get(key)!r}: "
                                 f"runs with other settings are not one table; merge runs of one table only")


def backfill_probabilities(report: dict[str, Any], images: dict[str, Any], class_names: list[str]) -> None:
    """Each run's per-image probabilities from the evaluation its piece's ``--work_dir`` still holds
    (``seed<k>/<model>/eval/per_image.csv``, ``eval_external``), where it does: pieces written before runs kept
    them in the JSON get them, and the others the file's own precision."""
    from bundle.compare import read_per_image

    work_dir = Path(report.get("settings", {}).get("work_dir") or "")
    for name, results in report["runs"].items():
        for result in results:
            for where, folder in (("test", "eval"), ("external", "eval_external")):
                scored = result.get(where)
                if result["seed"] is None or not scored or where not in images:
                    continue
                path = work_dir / f"seed{result['seed']}" / name.replace(" ", "_") / folder / "per_image.csv"
                if path.is_file():
                    filled = _scores({}, class_names, read_per_image(path), images[where]["names"])
                    scored["probabilities"] = filled["probabilities"]


def merge(files: list[str], out: Path, figure_path: str | None, resamples: int | None = None) -> int:
    """One table from several partial runs of this script (same settings, other seeds or models); the paired
    comparisons are recomputed from the runs' per-image probabilities."""
    reports = [json.loads(Path(f).read_text()) for f in files]
    check_mergeable(reports, files)
    class_names = reports[0]["class_names"]
    images = next((r["images"] for r in reports if r.get("images")), {})
    for report in reports:
        backfill_probabilities(report, images, class_names)
    runs: dict[str, list[dict[str, Any]]] = {}
    for path, report in zip(files, reports):
        for where, table_images in (report.get("images") or {}).items():
            if images.get(where, {}).get("names") != table_images["names"]:
                raise SystemExit(f"{path}: its {where} images differ from the others'; merge runs of one table only")
        for name, results in report["runs"].items():
            seen = {r["seed"] for r in runs.get(name, [])}
            runs.setdefault(name, []).extend(r for r in results if r["seed"] not in seen)
    for results in runs.values():
        results.sort(key=lambda r: -1 if r["seed"] is None else r["seed"])
    ordered = {name: runs[name] for name in [TEACHER, *(m[0] for m in MODELS)] if name in runs}
    resamples = resamples or 1000  # the paired bootstraps recomputed here: --bootstrap_resamples of the merge
    content = {**reports[0], "commands": [r["command"] for r in reports], "merged_from": files, "runs": ordered,
               "images": images, "summary": summarise(ordered, class_names, images, resamples)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(content), indent=2))
    summary = content["summary"]
    print(table(summary, any("external_auc_macro" in r for r in summary.values())), end="\n\n")
    print(criteria_table(summary), end="\n\n")
    print(per_class_table(summary, class_names), end="\n\n")
    print(localization_table(summary))
    if figure_path:
        figure(ordered, Path(figure_path), f"{reports[0]['dataset']}: teacher = "
                                             f"{Path(reports[0]['settings']['teacher_predictions']).name}; "
                                             f"{reports[0]['split']['test']} test images")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="put partial reports of this script together into --out (no training)")
    parser.add_argument("--dataset", default="nih")
    parser.add_argument("--dataset_dir")
    parser.add_argument("--teacher_predictions", help="the recorded teacher (CSV or JSON)")
    parser.add_argument("--external_dataset", default=None, help="a second data set (reader name) to test on")
    parser.add_argument("--external_dataset_dir", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--split_seed", type=int, default=0, help="the patient-level split, held for every seed and row")
    parser.add_argument("--image_size", type=int, default=64, help="the 3-conv student's input side")
    parser.add_argument("--compact_image_size", type=int, default=128)
    parser.add_argument("--assistant_image_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30, help="students' epochs")
    parser.add_argument("--assistant_epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--hard_weight", type=float, default=1.0)
    parser.add_argument("--soft_weight", type=float, default=1.0)
    parser.add_argument("--feature_weight", type=float, default=0.1, help="the Wasserstein term, student from assistant")
    parser.add_argument("--checkpoint", default="best", choices=("best", "final"),
                        help="test model.pt (best validation macro AUC) or model_final.pt (the last epoch)")
    parser.add_argument("--ema_momentum", type=float, default=None,
                        help="validate and save a moving average of the weights (the configs' ema_momentum, e.g. 0.02)")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000,
                        help="draws of every bootstrap: each model's interval and each paired gain's")
    parser.add_argument("--max_images", type=int, default=None, help="cap per split, for a quick check")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=[m[0] for m in MODELS], choices=[m[0] for m in MODELS])
    parser.add_argument("--no_localization", action="store_true", help="skip Grad-CAM against the data set's boxes")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="further overrides for every model")
    parser.add_argument("--out", default="docs/results/recorded_nih.json")
    parser.add_argument("--figure", default=None, help="PNG of the macro AUCs with their intervals")
    parser.add_argument("--work_dir", default="outputs/benchmark_recorded")
    parser.add_argument("--reuse", action="store_true", help="test models already trained under --work_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.figure, args.bootstrap_resamples)
    if not (args.dataset_dir and args.teacher_predictions):
        parser.error("--dataset_dir and --teacher_predictions are required (unless --merge)")
    if "3-conv student from assistant" in args.models and "assistant from recorded teacher" not in args.models:
        parser.error("the student from the assistant needs 'assistant from recorded teacher' in --models")
    if bool(args.external_dataset) != bool(args.external_dataset_dir):
        parser.error("--external_dataset and --external_dataset_dir go together")

    os.chdir(REPO_ROOT)
    from bundle.data import load_splits
    from bundle.localization import cam_saliency, class_localization, map_agreement
    from bundle.networks import NETWORKS, count_parameters

    out = Path(args.out)
    extra = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    if args.ema_momentum:
        extra["ema_momentum"] = args.ema_momentum
    splits = load_splits(args.dataset, args.dataset_dir, seed=args.split_seed, max_images=args.max_images)
    class_names, task = list(splits.class_names), splits.task
    external = None
    if args.external_dataset:
        # capped as the students' evaluation caps it (configs: max_images per split), so every row scores the same images
        external = load_splits(args.external_dataset, args.external_dataset_dir, seed=args.split_seed,
                               max_images=args.max_images)
        if list(external.class_names) != class_names:
            raise SystemExit(f"the external data set's classes {external.class_names} are not the models' {class_names}")
    bootstrap_keys = ["auc_macro", "accuracy", "f1_macro"]
    sizes = {"student": {"image_size": args.image_size}, "compact": {"image_size": args.compact_image_size},
             "assistant": {"image_size": args.assistant_image_size}}
    epochs = {"student": args.epochs, "compact": args.epochs, "assistant": args.assistant_epochs}
    soft = {"temperature": args.temperature,
            "loss_weights": {"hard": args.hard_weight, "soft": args.soft_weight, "feature": 0.0}}
    boxed = [r for r in splits.train + splits.validation + splits.test if r.get("boxes")]
    where_boxed = {split: sum(1 for r in getattr(splits, split) if r.get("boxes"))
                   for split in ("train", "validation", "test")}
    print(f"{splits.summary()}; boxed images per split: {where_boxed}", flush=True)

    images = {"test": image_table(splits.test, class_names)}
    teacher: dict[str, Any] = {"seed": None, "test": score_teacher(args.teacher_predictions, splits.test, class_names,
                                                                   task, args.bootstrap_resamples)}
    if teacher["test"] is None:
        teacher["test_note"] = NOT_SCORED
    if external is not None:
        images["external"] = image_table(external.all, class_names)
        teacher["external"] = score_teacher(args.teacher_predictions, external.all, class_names, task,
                                            args.bootstrap_resamples)
        if teacher["external"] is None:
            teacher["external_note"] = NOT_SCORED
            print(f"teacher on {args.external_dataset_dir}: {NOT_SCORED}; the students are scored on all "
                  f"{len(external.all)} images", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {TEACHER: [teacher]}

    def report() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        content = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "dataset": args.dataset,
                   "split": {"seed": args.split_seed, "train": len(splits.train), "validation": len(splits.validation),
                             "test": len(splits.test), "boxed_images": where_boxed},
                   "class_names": class_names, "settings": vars(args), "pairs": PAIRS, "images": images, "runs": runs,
                   "summary": summarise(runs, class_names, images, args.bootstrap_resamples)}
        out.write_text(json.dumps(_clean(content), indent=2))

    report()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_dir = Path(args.work_dir) / f"seed{seed}"
        assistant_maps = None
        for name, stage, source, group, network_name in MODELS:
            if name not in args.models:
                continue
            output_dir = seed_dir / name.replace(" ", "_")
            settings: dict[str, Any] = {
                "dataset": args.dataset, "dataset_dir": args.dataset_dir, "split_seed": args.split_seed, "seed": seed,
                "batch_size": args.batch_size, "max_epochs": epochs[group], "device": args.device,
                "max_images": args.max_images, "output_dir": str(output_dir), **sizes[group], **extra}
            if stage == "compact_student":
                settings["densenet161_ckpt"] = None
            if stage == "assistant" and source is None:
                settings["teacher_stage"] = None
            if source == "recorded":
                settings.update({"teacher_predictions": args.teacher_predictions, **soft})
            elif source == "assistant":
                settings.update({"assistant_ckpt": str(seed_dir / "assistant_from_recorded_teacher" / "model.pt"),
                                 "teacher_image_size": args.assistant_image_size, "temperature": args.temperature,
                                 "loss_weights": {"hard": args.hard_weight, "soft": args.soft_weight,
                                                  "feature": args.feature_weight}})
            result: dict[str, Any] = {"seed": seed}
            if not (args.reuse and (output_dir / "model.pt").is_file()):
                print(f"[seed {seed}] {name} ...", flush=True)
                start = time.perf_counter()
                run_workflow(stage_configs(stage), "training", settings)
                result["train_seconds"] = round(time.perf_counter() - start, 1)
            if args.checkpoint == "final":
                settings["ckpt_path"] = str(output_dir / "model_final.pt")
            metrics, evaluation = evaluate(stage, settings, output_dir / "eval", bootstrap_keys, args.bootstrap_resamples)
            result["test"] = _scores(metrics, class_names, per_image(output_dir / "eval"), images["test"]["names"])
            result["validation_auc_macro"] = json.loads((output_dir / "metrics.json").read_text()).get("auc_macro")
            network = evaluation.parser.get_parsed_content("validated_network").eval()
            result["parameters"] = count_parameters(network)
            if external is not None:  # no teacher: testing needs none, and the file may have no row for these images
                ext_metrics, _ = evaluate(stage, {**settings, "dataset": args.external_dataset,
                                                  "dataset_dir": args.external_dataset_dir, "eval_split": "all",
                                                  "teacher_predictions": None},
                                          output_dir / "eval_external", bootstrap_keys, args.bootstrap_resamples)
                result["external"] = _scores(ext_metrics, class_names, per_image(output_dir / "eval_external"),
                                             images["external"]["names"])
            if boxed and not args.no_localization:
                layer = NETWORKS[network_name].saliency_layer
                size = sizes[group]["image_size"]
                device = str(next(network.parameters()).device)
                maps = cam_saliency(network, layer, "gradcam")
                result["localization"] = class_localization(maps, boxed, size, class_names, device=device)
                if network_name == "assistant":
                    assistant_maps = (maps, size)
                elif assistant_maps is not None:
                    result["agreement_with_assistant"] = map_agreement(
                        assistant_maps[0], maps, boxed, assistant_maps[1], size, class_names, device=device)
            runs.setdefault(name, []).append(result)
            shown = {k: result["test"][k] for k in ("auc_macro", "auc_macro_ci_low", "auc_macro_ci_high", "ece_macro")}
            print(f"[seed {seed}] {name}: test {json.dumps(_clean(shown))}"
                  + (f", external AUC {result['external']['auc_macro']:.4f}" if "external" in result else ""), flush=True)
            report()
    summary = summarise(runs, class_names, images, args.bootstrap_resamples)
    print(table(summary, external is not None), end="\n\n")
    print(criteria_table(summary), end="\n\n")
    print(per_class_table(summary, class_names), end="\n\n")
    if boxed and not args.no_localization:
        print(localization_table(summary))
    if args.figure:
        figure(runs, Path(args.figure), f"{args.dataset}: teacher = {Path(args.teacher_predictions).name}; "
                                         f"{len(splits.test)} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
