"""Exports of a trained network, and a MONAI Model Zoo bundle built around them.

Why a package and not only a script: the exports are checked for numerical agreement
with the PyTorch network, and the same checks run in the tests; ``scripts/export_bundle.py``
is the command-line front end. One concern per module:

* :mod:`~bundle.export.exporters`: TorchScript and ONNX with MONAI's exporters, and the check
  that they agree with the PyTorch network;
* :mod:`~bundle.export.quantize`: ``models/model_int8.onnx`` (ONNX Runtime static int8, QDQ) calibrated on the
  model's training images and checked on its test split (``--int8``);
* :mod:`~bundle.export.package`: :func:`export_bundle`, which assembles the bundle folder;
* :mod:`~bundle.export.files`: file hashes, ``large_files.yml`` and the reproducible zip;
* :mod:`~bundle.export.model_card`: ``docs/README.md``, filled from ``templates/model_card.md``;
* :mod:`~bundle.export.data_license`: ``docs/data_license.txt``, the terms of the training data;
* :mod:`~bundle.export.schema`: ``metadata.json`` against the Model Zoo schema, when it can be had.

What a Model Zoo bundle is (MONAI bundle specification): a folder ``<name>/`` with
``configs/`` (``inference.json``, ``metadata.json``, ``logging.conf``, ...),
``models/model.pt`` (a plain ``state_dict``) and ``models/model.ts`` (TorchScript with
the metadata and the config inside), ``docs/README.md`` (the model card),
``docs/data_license.txt``, ``LICENSE`` and ``large_files.yml`` (where the model files
can be downloaded, with their hashes), released as ``<name>_v<version>.zip`` holding
that folder. ``monai.bundle.download(name=..., url=...)`` extracts such a zip.

Custom code: the configs import the ``bundle`` package (``"$import bundle"``,
``"_target_": "bundle.networks.ThreeConvStudent"``), so it is shipped at the root of
the exported bundle, where Model Zoo bundles keep theirs (``scripts/``). Python finds it
because everything that runs a bundle puts the bundle root on ``sys.path``:
``python -m monai.bundle run`` run from the bundle root (``-m`` adds the working
directory; ``ConfigWorkflow.run`` adds the root too), MONAI Label's ``BundleInferTask``
(it inserts the bundle path before parsing any config id). ``monai.bundle.load`` builds
``network_def`` without touching ``sys.path``: put the bundle folder on it first, or
load the TorchScript model (``load_ts_module=True``), which needs no code at all. The
configs are not rewritten to ``scripts.*`` so that the exported ``inference.json`` is
the repository's, byte for byte in its settings.
"""

from __future__ import annotations

from .data_license import DATA_LICENSES, data_license
from .errors import ExportError
from .exporters import ONNX_CONVERTER_KWARGS, TOLERANCE, build_network, compare_exports, export_onnx, export_torchscript
from .files import file_sha256, large_files_yaml, write_zip
from .model_card import model_card
from .package import DEFAULT_NAME, ExportResult, export_bundle
from .schema import SCHEMA_NAME, MetadataCheck, validate_metadata, verify_metadata_offline

# private helpers that scripts/export_bundle.py and the tests import from here, as before the split
from .model_card import _markdown_section  # noqa: F401
from .package import _parse_value  # noqa: F401

__all__ = [
    "ExportError",
    "ExportResult",
    "DEFAULT_NAME",
    "DATA_LICENSES",
    "ONNX_CONVERTER_KWARGS",
    "SCHEMA_NAME",
    "TOLERANCE",
    "MetadataCheck",
    "file_sha256",
    "build_network",
    "export_torchscript",
    "export_onnx",
    "compare_exports",
    "export_bundle",
    "model_card",
    "data_license",
    "large_files_yaml",
    "write_zip",
    "validate_metadata",
    "verify_metadata_offline",
]
