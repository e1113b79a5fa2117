"""Deploy the bundle as a MONAI Deploy App SDK application (optional: ``pip install 'cxr-distill[deploy]'``).

``python -m bundle.deploy -i <chest CR/DX DICOM or folder> -o <output folder> -m <bundle folder or model.pt>``
writes ``classification.json``, ``classification_sr.dcm`` (DICOM Comprehensive 3D SR) and
Grad-CAM overlays under ``saliency/``. See :mod:`bundle.deploy.app`.

Importing this package does not import the App SDK (Holoscan): :mod:`bundle.deploy.core`
and :mod:`bundle.deploy.sr` work without it (``sr`` needs highdicom); only
:mod:`bundle.deploy.operators`, :mod:`bundle.deploy.app` and the command need the SDK.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChestXRayClassifierApp", "sdk_available"]


def sdk_available() -> bool:
    """Whether the MONAI Deploy App SDK (and so Holoscan) can be imported."""
    try:
        import monai.deploy.core  # noqa: F401
    except ImportError:
        return False
    return True


def __getattr__(name: str) -> Any:
    if name == "ChestXRayClassifierApp":
        from .app import ChestXRayClassifierApp

        return ChestXRayClassifierApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
