"""Deploy the bundle as a MONAI Deploy App SDK application (optional: ``pip install 'cxr-distill[deploy]'``).

``python -m bundle.deploy -i <chest CR/DX DICOM or folder> -o <output folder> -m <bundle folder or model.pt>``
writes ``classification.json``, ``classification_sr.dcm`` (DICOM Comprehensive 3D SR) and
Grad-CAM overlays under ``saliency/``. See :mod:`bundle.deploy.app`.

The work, one concern per module, free of the App SDK (Holoscan) and testable without it:

* :mod:`~bundle.deploy.dicom_input`: find the one DICOM image of the input and read it as a chest radiograph;
* :mod:`~bundle.deploy.model`: find the bundle and parse its ``configs/inference.json`` once;
* :mod:`~bundle.deploy.classifier`: one radiograph through the bundle's preprocessing, network and postprocessing;
* :mod:`~bundle.deploy.writers`: ``classification.json`` and the Grad-CAM overlays;
* :mod:`~bundle.deploy.sr`: the DICOM Structured Report (needs highdicom).

Only :mod:`bundle.deploy.operators` (thin SDK operators around those), :mod:`bundle.deploy.app`
and the command (:mod:`bundle.deploy.__main__`) import the SDK.
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
