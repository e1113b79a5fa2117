"""``python -m bundle.deploy -i <dcm or folder> -o <dir> -m <bundle dir or model.pt> [--allow-non-chest]``.

The path options are the App SDK's own (``monai.deploy.core.parse_args``: ``-i/--input``,
``-o/--output``, ``-m/--model``, ``-l/--log-level``, ``-w/--workdir``), with the SDK's
``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH`` as defaults. This app
adds ``--backend pytorch|onnxruntime`` and ``--onnx-path`` (what predicts; see :mod:`bundle.runtime`) and
``--allow-non-chest``: classify a DICOM whose ``BodyPartExamined`` is not a chest or whose
``Modality`` is not a radiograph (the bundle's ``require_chest`` set to false; logged as a warning).
The check is there because such an image gives meaningless probabilities; overriding it is for a
chest radiograph whose header is wrong (e.g. ``BodyPartExamined`` left at a default by the modality).

Exit status (:data:`EXIT_STATUS`): 0 on success; 2 for unusable input (the last line names the file:
not DICOM, no pixel data, not a chest radiograph, ...) or an unusable model path, with nothing
written (an output folder the run made is removed again); 1 otherwise (the SDK not installed, or an error of the app itself, with its traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["EXIT_STATUS", "main"]

BAD_INPUT_EXIT_STATUS = 2
EXIT_STATUS = {"success": 0, "error": 1, "bad input or model": BAD_INPUT_EXIT_STATUS}

ALLOW_NON_CHEST = "--allow-non-chest"
# The data layer's advice names its own parameter; on this command line the same switch is ALLOW_NON_CHEST.
_LOADER_ADVICE = re.compile(r"pass require_chest=False to load it anyway")


def _own_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bundle.deploy", add_help=False,
        description="Classify one chest CR/DX DICOM with the cxr-distill bundle: classification.json, a DICOM "
                    "SR (classification_sr.dcm) and Grad-CAM overlays in the output folder.",
        epilog="Exit status: 0 success; 2 unusable input or model (the last line names the file; nothing "
               "written); 1 other errors. The MONAI Deploy App SDK's options follow.")
    parser.add_argument(ALLOW_NON_CHEST, dest="allow_non_chest", action="store_true",
                        help="classify the image even if its DICOM header says it is not a chest radiograph "
                             "(BodyPartExamined, Modality); the default refuses it with exit status 2")
    parser.add_argument("--backend", choices=("pytorch", "onnxruntime"), default=None,
                        help="what predicts: the bundle's PyTorch network (its config's default) or ONNX Runtime "
                             "from models/model.onnx (Grad-CAM maps from its saliency activations through the PyTorch tail: the "
                             "fastest path to one image with its map; docs/fast_inference.md)")
    parser.add_argument("--onnx-path", dest="onnx_path", default=None,
                        help="the ONNX model of --backend onnxruntime (default: the bundle's models/model.onnx; "
                             "models/model_int8.onnx for the int8 export)")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and the SDK's options")
    return parser


def _for_this_command(message: str) -> str:
    return _LOADER_ADVICE.sub(f"pass {ALLOW_NON_CHEST} to classify it anyway", message)


def _output_folder(sdk_argv: Sequence[str]) -> Path:
    """The output folder the SDK's parser will take (``-o``, else ``HOLOSCAN_OUTPUT_PATH``, else ``output``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-o", "--output", default=None)
    known, _ = parser.parse_known_args(list(sdk_argv))
    return Path(known.output or os.environ.get("HOLOSCAN_OUTPUT_PATH") or "output")


def _quiet_holoscan(sdk_argv: Sequence[str]) -> None:
    """Holoscan's own INFO and WARN lines off, unless asked for (``-l``, ``HOLOSCAN_LOG_LEVEL``).

    On every run Holoscan logs its graph's life (~10 lines), warns that its probe of the CUDA driver failed
    on a machine without a GPU (it then runs on the CPU, as this app does there), warns about the stack size,
    and ends with the greedy scheduler's "Some entities are waiting for execution, but there are no periodic
    or async entities to get out of the deadlock": its normal stop once the one-image graph has run. None of
    them concerns the user; errors still show. highdicom logs each DICOM module it copies into the SR, at INFO.
    """
    asked = any(a in ("-l", "--log-level") or a.startswith("--log-level=") for a in sdk_argv)
    if asked or "HOLOSCAN_LOG_LEVEL" in os.environ:
        return
    os.environ["HOLOSCAN_LOG_LEVEL"] = "ERROR"  # read by Holoscan when the application starts
    logging.getLogger("highdicom").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app once; ``argv`` as ``sys.argv`` (its first item is the program name)."""
    from bundle.checkpoints import CheckpointError
    from bundle.data.errors import CXRDataError

    argv = list(sys.argv if argv is None else argv)
    options, sdk_argv = _own_options().parse_known_args(argv[1:])
    if options.help:
        _own_options().print_help()
        print()
    try:
        from monai.deploy.core import init_app_context
    except ImportError as error:  # the deploy extra is optional
        print(f"error: the MONAI Deploy App SDK is not installed ({error}); pip install 'cxr-distill[deploy]'",
              file=sys.stderr)
        return 1
    from .app import ChestXRayClassifierApp
    from .model import load_bundle

    sdk_argv = [argv[0], *sdk_argv, *(["--help"] if options.help else [])]
    _quiet_holoscan(sdk_argv)
    output = _output_folder(sdk_argv[1:])
    output_existed = output.exists()
    app_context = init_app_context(sdk_argv)  # the SDK's parser (its own errors and --help exit here) makes -o
    overrides = {"require_chest": False} if options.allow_non_chest else {}
    if options.backend:
        overrides["backend"] = options.backend
    if options.onnx_path:
        overrides["onnx_path"] = str(Path(options.onnx_path).expanduser().resolve())
    try:
        model = load_bundle(app_context.model_path, overrides=overrides)  # before Holoscan starts, which logs
        ChestXRayClassifierApp([argv[0]], app_context=app_context, model=model).run()
    except (CXRDataError, CheckpointError, FileNotFoundError) as error:
        if not output_existed and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # nothing written: not even the folder the SDK made for the outputs
        print(f"error: {_for_this_command(str(error))}", file=sys.stderr)
        return BAD_INPUT_EXIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
