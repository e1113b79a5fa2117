"""Record a trained stage's predictions on a data set split, as a file a later stage can distil from.

The file is ``predictions.csv`` / ``predictions.json`` in the format of ``configs/inference.json``
(``image, status, predicted, <class 1>, ..., error``; probabilities to 9 significant digits), with
each record's id in ``image`` (its path; for images held in memory, such as MedMNIST's, the record
id ``train-17``), which is what ``teacher_predictions`` reads (``bundle.distill.recorded``).
``configs/inference.json`` records image files; this script records any data set reader's split,
through the stage's own evaluation preprocessing::

    python scripts/record_predictions.py --stage assistant --ckpt outputs/assistant/model.pt \\
        --split train --out outputs/assistant_predictions --set dataset=pneumoniamnist \\
        dataset_dir=../shared/data/pneumoniamnist image_size=28
    python -m monai.bundle run training --config_file configs/student.json --dataset pneumoniamnist \\
        --dataset_dir ../shared/data/pneumoniamnist --image_size 28 --loss_weights#feature 0 \\
        --teacher_predictions outputs/assistant_predictions/predictions.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="student", help="the stage whose network_def the checkpoint fits")
    parser.add_argument("--ckpt", required=True, help="its model.pt")
    parser.add_argument("--split", default="train", choices=("train", "validation", "test", "all"))
    parser.add_argument("--out", required=True, help="folder of predictions.csv and predictions.json")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=JSON",
                        help="config ids of the stage, as when it was trained (dataset, dataset_dir, image_size ...)")
    args = parser.parse_args(argv)

    import torch
    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset

    from bundle.checkpoints import CheckpointError, load_weights
    from bundle.data import CXRDataError
    from bundle.distill import record_id
    from bundle.handlers import PredictionWriter
    from bundle.metrics import probabilities
    from bundle.stages import stage_configs

    os.chdir(REPO_ROOT)
    config = ConfigParser()
    config.read_config(stage_configs(args.stage))
    config.update({"device": f"$torch.device({args.device!r})", "output_dir": str(Path(args.out)),
                   **{key: _value(value) for key, value in (item.split("=", 1) for item in args.set)}})
    try:
        splits = config.get_parsed_content("data#splits")
        network = load_weights(config.get_parsed_content("network_def"), args.ckpt,
                               class_names=list(splits.class_names)).to(args.device).eval()
    except (CXRDataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    records = getattr(splits, args.split)
    writer = PredictionWriter(args.out, splits.class_names, splits.task)
    loader = DataLoader(Dataset(records, config.get_parsed_content("preprocessing#eval")), batch_size=args.batch_size)
    ids = iter([record_id(r) for r in records])
    with torch.no_grad():
        for batch in loader:
            for row in probabilities(network(batch["image"].to(args.device)).cpu(), splits.task).tolist():
                writer.add(next(ids), row)
    writer.write()
    print(f"{writer.count} predictions of the {args.stage} on {args.split} ({splits.summary()}) -> {writer.csv_path}")
    return 0


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


if __name__ == "__main__":
    sys.exit(main())
