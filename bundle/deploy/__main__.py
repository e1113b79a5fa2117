"""``python -m bundle.deploy -i <dcm or folder> -o <dir> -m <bundle dir or model.pt>``.

The options are the App SDK's own (``monai.deploy.core.parse_args``: ``-i/--input``,
``-o/--output``, ``-m/--model``, ``-l/--log-level``, ``-w/--workdir``), with the SDK's
``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH`` as defaults.

Exit status: 0 on success; 2 for unusable input (the message names the file: not DICOM,
no pixel data, not a chest radiograph, ...) or an unusable model path; 1 otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

BAD_INPUT_EXIT_STATUS = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app once; ``argv`` as ``sys.argv`` (its first item is the program name)."""
    from bundle.checkpoints import CheckpointError
    from bundle.data.errors import CXRDataError

    try:
        from monai.deploy.core import init_app_context
    except ImportError as error:  # the deploy extra is optional
        print(f"error: the MONAI Deploy App SDK is not installed ({error}); pip install 'cxr-distill[deploy]'",
              file=sys.stderr)
        return 1
    from .app import ChestXRayClassifierApp

    argv = list(sys.argv if argv is None else argv)
    app_context = init_app_context(argv)
    app = ChestXRayClassifierApp([argv[0]], app_context=app_context)
    try:
        app.run()
    except (CXRDataError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT_EXIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
