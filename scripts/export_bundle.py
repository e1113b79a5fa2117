"""Package a trained checkpoint as a MONAI Model Zoo bundle folder and zip, with checked exports.

    python scripts/export_bundle.py --ckpt outputs/student/model.pt --out outputs/export
    python scripts/export_bundle.py --ckpt outputs/nih_student/model.pt --out outputs/export --int8 \\
        --calibration_dir ../shared/data/nih14_subset --set image_size=64 'class_names=[...]'
    python scripts/export_bundle.py --ckpt outputs/pneumonia/model.pt --out outputs/export --onnx \\
        --name cxr_pneumonia_student_classification \\
        --set 'class_names=["Normal", "Pneumonia"]' task=multiclass image_size=28

writes ``<out>/<name>/`` (configs, ``models/model.pt`` and ``model.ts`` [and ``model.onnx``], the
model card ``docs/README.md``, ``docs/data_license.txt``, ``LICENSE``, ``large_files.yml``, the
``bundle`` code) and ``<out>/<name>_v<version>.zip``. A multi-label checkpoint's per-class decision thresholds
(``model.thresholds.json`` beside ``model.pt``, chosen on the validation split at the end of training)
become the exported ``configs/inference.json``'s ``threshold``. The TorchScript (and ONNX) exports are made
with MONAI's ``ckpt_export`` / ``onnx_export`` and compared with the PyTorch network. ``metadata.json``
is validated against MONAI's bundle schema when it can be had: ``--schema FILE``, a copy beside the
project's test data or in ``~/.cache/cxr-distill/``, else MONAI's own download into that cache; when
none works (offline), the bundle is exported all the same and the last line says that the metadata
was not validated. See ``bundle/export/`` for the layout and why.

Exit status: 0 on success (also when validation had to be skipped: see the warning), 1 when the
export fails (missing or mismatched checkpoint, metadata the schema rejects, a --schema file that
does not exist, exports that disagree with PyTorch), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.export import DEFAULT_NAME, ExportError, _parse_value, export_bundle  # noqa: E402
from bundle.handlers.summary import python_command, shell_quote  # noqa: E402
from bundle.thresholds import describe, thresholds_path  # noqa: E402


def _overrides(pairs: list[str]) -> dict:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExportError(f"--set takes id=value pairs (value as JSON), got {pair!r}")
        result[key] = _parse_value(value)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="weights to export, e.g. outputs/student/model.pt")
    parser.add_argument("--out", default="outputs/export", help="folder for <name>/ and <name>_v<version>.zip")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="bundle name (keep 'classification' in it for MONAI Label's monaibundle app)")
    parser.add_argument("--key_in_ckpt", default=None, help="entry with the weights in a nested checkpoint, "
                        "e.g. network for checkpoints/last.pt")
    parser.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE",
                        help="config ids of the exported inference.json (JSON values): class_names, task, "
                             "image_size, network_def ...")
    parser.add_argument("--metrics", default=None, help="the checkpoint's metrics.json (default: beside --ckpt)")
    parser.add_argument("--dataset", default=None,
                        help="what the weights were trained on (default: from metrics.json)")
    parser.add_argument("--data_license", default=None, help="text file shipped as docs/data_license.txt")
    parser.add_argument("--onnx", action="store_true", help="also export models/model.onnx (needs the export extra)")
    parser.add_argument("--int8", action="store_true",
                        help="also write models/model_int8.onnx (implies --onnx): ONNX Runtime static quantization "
                             "(QDQ) calibrated on the model's training images, checked on its test split "
                             "(models/model_int8.json records both; docs/fast_inference.md)")
    parser.add_argument("--calibration_dir", default=None, help="--int8: the model's data set folder")
    parser.add_argument("--calibration_dataset", default=None,
                        help="--int8: its reader name (nih, chexpert, ...; default: metrics.json's dataset)")
    parser.add_argument("--calibration_images", type=int, default=128,
                        help="--int8: training images the calibration reads (default 128)")
    parser.add_argument("--calibration_method", default="minmax", choices=("minmax", "entropy", "percentile"),
                        help="--int8: how activation ranges are found (default minmax)")
    parser.add_argument("--split_seed", type=int, default=0, help="--int8: the training run's split_seed (default 0)")
    parser.add_argument("--int8_check_split", default="test", choices=("validation", "test"),
                        help="--int8: the labelled split of the accuracy check (default test)")
    parser.add_argument("--int8_max_auc_drop", type=float, default=0.005,
                        help="--int8: the export fails if int8 loses more macro AUC than this (default 0.005)")
    parser.add_argument("--no_zip", action="store_true", help="write the folder only")
    parser.add_argument("--url_base", default=None,
                        help="where models/ will be hosted, for large_files.yml (default: file:// URLs of the export)")
    parser.add_argument("--schema", default=None, help="local copy of the bundle schema named in metadata.json "
                        "(meta_schema_20240725.json); default: a cached copy, else MONAI's download, else none "
                        "(the export then warns that the metadata was not validated)")
    parser.add_argument("--no_schema_download", action="store_true",
                        help="do not download the schema when no local copy is found")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <out>/<name>")
    args = parser.parse_args(argv)

    try:
        result = export_bundle(
            args.ckpt, args.out, args.name, key_in_ckpt=args.key_in_ckpt, overrides=_overrides(args.set),
            metrics=args.metrics, dataset=args.dataset, data_license_file=args.data_license, onnx=args.onnx,
            zip_bundle=not args.no_zip, url_base=args.url_base, schema=args.schema,
            download_schema=not args.no_schema_download, overwrite=args.overwrite,
            int8={"dataset": args.calibration_dataset, "dataset_dir": args.calibration_dir,
                  "split_seed": args.split_seed, "images": args.calibration_images,
                  "method": args.calibration_method, "check_split": args.int8_check_split,
                  "max_auc_drop": args.int8_max_auc_drop} if args.int8 else None)
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    print(f"bundle: {result.bundle_dir}")
    if result.zip_path:
        print(f"zip:    {result.zip_path}")
    for kind, difference in result.agreement.items():
        print(f"{kind} vs PyTorch: max |difference| of the logits = {difference:.3g}")
    if result.int8 is not None:
        check = result.int8.check
        print(f"int8: {result.bundle_dir / 'models' / result.int8.model}, calibrated on "
              f"{result.int8.calibration['images']} training images ({result.int8.method}); {check['split']} split "
              f"({check['images']} images): macro AUC fp32 {check['fp32']['auc_macro']:.4f}, int8 "
              f"{check['int8']['auc_macro']:.4f} ({check['auc_macro_change']:+.4f}); largest probability change "
              f"{check['max_abs_probability_change']:.4f}")
        for finding, change in check["auc_change_per_class"].items():
            print(f"  {finding}: AUC {check['fp32']['auc_per_class'][finding]:.4f} -> "
                  f"{check['int8']['auc_per_class'][finding]:.4f} ({change:+.4f})")
    if result.thresholds is not None:
        print(f"decision thresholds (configs/inference.json): {describe(result.thresholds, list(result.thresholds))}")
    else:
        print(f"no per-class decision thresholds with {args.ckpt} (no {thresholds_path(args.ckpt).name}): "
              "the bundle cuts every finding at its configs/inference.json threshold")
    print(f"cxr-distill: exported {result.bundle_dir}" + (f" and {result.zip_path}" if result.zip_path else "")
          + "; next, run it on a chest DICOM: " + " ".join(shell_quote(w) for w in [
              python_command(), "-m", "bundle.deploy", "-i", "path/to/image.dcm", "-o", "outputs/deploy", "-m",
              str(result.bundle_dir)])
          + f" (or serve it to MONAI Label: {python_command()} scripts/monailabel_server.py --bundle "
          + shell_quote(str(result.bundle_dir)) + ")")
    if "classification" not in args.name:
        print("note: MONAI Label's monaibundle app treats a bundle whose name lacks 'classification' as "
              "segmentation", file=sys.stderr)
    if result.metadata_check is not None and not result.metadata_check.validated:
        print(f"warning: {result.metadata_check}", file=sys.stderr)  # last: what a user must not miss
    return 0


if __name__ == "__main__":
    sys.exit(main())
