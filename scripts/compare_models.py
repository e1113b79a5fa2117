"""Compare two saved models on one data set, image by image: is the difference more than the test images' noise?

Reads each model's per-image probabilities, the ``per_image.csv`` that ``configs/evaluate.json`` writes into
its evaluation folder (``<output_dir>/eval``), pairs the two models on the images both scored, and reports
(:mod:`bundle.compare`):

* the macro AUC of each, and the difference A - B with its 95% paired bootstrap interval over the images
  (both models scored on the same resampled images; images resampled by patient);
* DeLong's test of the macro AUC difference (z, p, a normal 95% interval), and per class.

Give a model several evaluation folders (one per training seed) to compare seed means: ``--a run0/eval
run1/eval run2/eval``. See docs/comparing.md::

    python -m monai.bundle run evaluating --config_file "['configs/student.json','configs/evaluate.json']" \\
        --output_dir outputs/distilled --dataset nih --dataset_dir ../shared/data/nih14_subset
    python -m monai.bundle run evaluating --config_file "['configs/student.json','configs/evaluate.json']" \\
        --output_dir outputs/baseline --dataset nih --dataset_dir ../shared/data/nih14_subset
    python scripts/compare_models.py --a outputs/distilled/eval --b outputs/baseline/eval \\
        --names distilled baseline --out outputs/comparison.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bundle package first


def _number(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def _clean(value: Any) -> Any:
    """NaN (e.g. the AUC of a class without positives) as None, so the JSON stays JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def report_lines(result: dict[str, Any], names: tuple[str, str]) -> list[str]:
    boot, delong = result["bootstrap"], result["delong"]
    a, b = names
    lines = [f"{a} against {b}: {result['images']} images of {result['patients']} patients scored by both "
             f"({boot['runs_a']} run(s) of {a}, {boot['runs_b']} of {b}; macro AUC = mean of runs)",
             "",
             "| model | macro AUC |", "| --- | --- |",
             f"| {a} | {result['auc_macro_a']:.4f} |", f"| {b} | {result['auc_macro_b']:.4f} |",
             "",
             "| test | difference (A - B) | 95% interval | p |", "| --- | --- | --- | --- |",
             f"| paired bootstrap over images ({boot['resamples']} draws, by patient) | {_number(boot['difference'])} | "
             f"[{_number(boot['ci_low'])}, {_number(boot['ci_high'])}] | {boot['p_bootstrap']:.3f} |",
             f"| DeLong, macro AUC ({delong['macro']['classes']} classes) | {_number(delong['macro']['difference'])} | "
             f"[{_number(delong['macro']['ci_low'])}, {_number(delong['macro']['ci_high'])}] | "
             f"{delong['macro']['p']:.3f} |",
             "",
             f"| class | AUC {a} | AUC {b} | difference | DeLong z | p |", "| --- | --- | --- | --- | --- | --- |"]
    for name, c in delong["per_class"].items():
        if math.isnan(c["difference"]):
            lines.append(f"| {name} | n/a | n/a | (no positives or no negatives) | | |")
        else:
            lines.append(f"| {name} | {c['auc_a']:.4f} | {c['auc_b']:.4f} | {_number(c['difference'])} | "
                         f"{c['z']:.2f} | {c['p']:.3f} |")
    excludes = boot["ci_low"] > 0 or boot["ci_high"] < 0
    lines += ["", f"The 95% paired interval {'excludes' if excludes else 'includes'} zero: "
                  f"{'the test images support a difference' if excludes else 'these test images cannot tell the two apart'}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, metavar="EVAL_DIR",
                        help="model A's evaluation folder(s) (or per_image.csv files); several = its seeds")
    parser.add_argument("--b", nargs="+", required=True, metavar="EVAL_DIR", help="model B's, the baseline")
    parser.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"), help="the two models' names")
    parser.add_argument("--head", default="", help="'mlct/' (findings) or 'mcct/' (normal / abnormal) for a two-head ViT")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap draws")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)

    from bundle.compare import ImageScores, compare, read_per_image
    from bundle.data.errors import CXRDataError

    a = ImageScores.stack([read_per_image(path, args.head) for path in args.a])
    b = ImageScores.stack([read_per_image(path, args.head) for path in args.b])
    try:
        result = compare(a, b, resamples=args.resamples, seed=args.seed)
    except ValueError as error:  # other data sets or classes: the user's input, named as such
        raise CXRDataError(Path(args.a[0]), f"cannot be compared with {args.b[0]}: {error}") from None
    print("\n".join(report_lines(result, tuple(args.names))))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        content = {"a": {"name": args.names[0], "evaluations": args.a}, "b": {"name": args.names[1], "evaluations": args.b},
                   "head": args.head, **result}
        out.write_text(json.dumps(_clean(content), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
