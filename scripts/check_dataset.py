"""Scan a data set and print every problem before training meets it.

Reads the data set the way training does (``bundle.data.load_splits``: the same
readers, splits and options), then checks every record of train / validation /
test, and prints every problem of every record at once: files that do not exist,
folders, dangling or looping symbolic links, pipes, sockets or devices where an image
is expected (never opened), empty files, files of a format the loader does not read,
label vectors of the wrong length or with values other than 0/1, and (``--mode full``,
the default) every image decoded by the same loader training uses (truncated PNG/JPEG,
DICOM without pixel data or without a decoder, a DICOM whose pixel data does not match
its header or that is not a chest radiograph, constant images, too small images ...).
Missing images are listed with the rest, not instead of them. It also warns (without failing) about
class names that are near-duplicates of each other (``pnuemonia`` beside ``pneumonia``; case, spaces,
underscores) and classes with fewer than ``--min_class_images`` (5) positive images, naming their rows::

    python scripts/check_dataset.py --dataset cxr3 --dataset_dir ../shared/data/cxr3
    python scripts/check_dataset.py --dataset csv --dataset_dir labels.csv \\
        --options "{'image_column': 'path', 'label_columns': ['Effusion']}" --report problems.csv

Exit status: 0 when training would start, 1 when records have problems (listed,
and with ``--report`` written as CSV), 2 when the data set cannot be read at all
(unknown name, missing folder, CSV without the needed columns, unknown labels,
duplicate rows ...).
"""

from __future__ import annotations

import argparse
import ast
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data import CXRDataError, load_splits  # noqa: E402
from bundle.data.check import (  # noqa: E402
    CHECK_MODES, MIN_CLASS_IMAGES, class_warnings, find_split_problems, problem_kinds, write_problems_csv,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a name known to bundle.data.load_splits")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--options", default="{}", help="reader options as a Python/JSON dict")
    parser.add_argument("--mode", default="full", choices=[m for m in CHECK_MODES if m != "off"])
    parser.add_argument("--allow_non_chest", action="store_true", help="accept radiographs of other body parts")
    parser.add_argument("--min_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--cache_dir", default=None, help="where synthetic data is generated")
    parser.add_argument("--report", default=None, help="write every problem to this CSV")
    parser.add_argument("--min_class_images", type=int, default=MIN_CLASS_IMAGES,
                        help="warn about classes with fewer positive images than this")
    args = parser.parse_args(argv)

    try:
        options = ast.literal_eval(args.options)
        if not isinstance(options, dict):
            raise ValueError("not a dict")
    except (ValueError, SyntaxError) as error:
        print(f"--options must be a dict, e.g. \"{{'uncertain': 'ones'}}\": {error}", file=sys.stderr)
        return 2
    try:
        splits = load_splits(args.dataset, args.dataset_dir, seed=args.seed, cache_dir=args.cache_dir,
                             max_images=args.max_images, options=options)
    except CXRDataError as error:
        print(f"cannot read the data set: {error}", file=sys.stderr)
        return 2

    print(f"{args.dataset}: {splits.summary()}")
    warnings = class_warnings(splits, args.min_class_images)
    for warning in warnings:
        print(f"warning: {warning}")
    problems = find_split_problems(splits, args.mode, not args.allow_non_chest, args.min_size)
    for split, index, problem in problems:
        print(f"[{split} #{index}] {problem}")
    bad_records = {(split, index) for split, index, _ in problems}
    by_split = collections.Counter(split for split, _ in bad_records)
    total = len(splits.train) + len(splits.validation) + len(splits.test)
    print(f"\nchecked {total} records ({args.mode}): {len(bad_records)} with problems "
          f"(train {by_split['train']}, validation {by_split['validation']}, test {by_split['test']}), "
          f"{len(problems)} problems in all")
    for kind, count in problem_kinds(problems):
        print(f"  {count:6d}  {kind}")
    if args.report and problems:
        write_problems_csv(args.report, problems)
        print(f"problems written to {args.report}")
    if problems:
        print("training would stop at its data check: fix or remove these records, or train with "
              "--skip_bad_records True to leave them out")
        return 1
    if warnings:
        print(f"no problems: training can start, but read the {len(warnings)} warning(s) about the classes above")
    else:
        print("no problems: training can start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
