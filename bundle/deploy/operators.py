"""MONAI Deploy App SDK operators of the chest X-ray classification app.

Why custom operators instead of the SDK's DICOM and bundle operators. Each point was
checked by running the SDK 4.0.0 operators on ``chest_cr_monochrome1.dcm`` (a real
1955x1841 MONOCHROME1 CR) with this bundle (see the README section "Deploy with MONAI
Deploy"):

* ``DICOMDataLoaderOperator`` takes a folder only (a file gives "Required input folder does
  not exist."); it skips a non-DICOM file with a log warning and then raises "No study loaded
  from path <folder>.", which does not name the bad file.
* ``DICOMSeriesToVolumeOperator`` builds a 3-D ``DHW`` volume (here ``(1, 1955, 1841)``)
  with the modality rescale and the Presentation LUT only: no VOI LUT / window, and the
  MONOCHROME1 image comes out as a negative (correlation -1.0 with the bundle's
  ``load_cxr``). A single CR has no ImagePositionPatient / ImageOrientationPatient, so its
  Image carries no affine, and ``MonaiBundleInferenceOperator`` then fails in
  ``MetaTensor.ensure_torch_and_prune_meta`` ("can't convert np.ndarray of type
  numpy.object_").
* ``MonaiBundleInferenceOperator`` needs ``postprocessing`` to be a ``Compose`` (ours is
  one ``Activationsd``: "'Activationsd' object has no attribute 'transforms'"), needs the
  preprocessed input to keep MetaTensor metadata (ours ends with
  ``EnsureTyped(track_meta=False)``: "'Tensor' object has no attribute 'meta'"), and given
  the bundle folder as ``-m`` its model factory makes a generic ``Model`` without predictor
  ("A predictor of the model is not set."). With all three worked around, its
  "probabilities" output labels each class with ``channel_def[int(probability)]``, i.e.
  every class as class 0 (``['Nodule', 'Nodule', 'Nodule', 'Nodule', 'Nodule']`` while
  Pleural Effusion was at 0.517 >= 0.5), and it runs under ``torch.no_grad()``, so Grad-CAM
  cannot be computed from it.

So: :class:`ChestDicomLoaderOperator` reads one CR/DX DICOM (file or folder) with the
bundle's loader, :class:`ChestClassifierOperator` runs the bundle's own inference config
and checkpoint, and three writers make ``classification.json``, a DICOM SR and the Grad-CAM
overlays. The work is done by :mod:`bundle.deploy.dicom_input`, :mod:`~bundle.deploy.model`,
:mod:`~bundle.deploy.classifier`, :mod:`~bundle.deploy.writers` and :mod:`~bundle.deploy.sr`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from bundle.data.errors import CXRDataError
from bundle.thresholds import describe

from .classifier import Classification, classify
from .dicom_input import read_chest_radiograph, scan_input
from .model import BundleModel
from .sr import write_structured_report
from .writers import write_classification_json, write_saliency

__all__ = [
    "ChestClassifierOperator",
    "ChestDicomLoaderOperator",
    "ClassificationJsonWriterOperator",
    "SaliencyOverlayOperator",
    "StructuredReportWriterOperator",
]

logger = logging.getLogger(__name__)


class ChestDicomLoaderOperator(Operator):
    """Read one chest CR/DX DICOM (a file, or the only DICOM image in a folder).

    Named output ``radiograph``: a :class:`~bundle.deploy.dicom_input.ChestRadiograph` (header, path,
    display image in [0, 1]; the folder's other files with their reasons in ``skipped_inputs``,
    which ``classification.json`` lists). Bad input (not DICOM, no pixel data, not a chest
    radiograph, several images) is a :class:`~bundle.data.errors.CXRDataError` naming the file:
    given to ``on_bad_input`` (the app's, which stops the run and reports it), else raised.
    """

    def __init__(self, fragment: Fragment, *args, input_path: str | os.PathLike, require_chest: bool = True,
                 on_bad_input: Callable[[CXRDataError], None] | None = None, **kwargs) -> None:
        self.input_path = Path(input_path)
        self.require_chest = require_chest
        self.on_bad_input = on_bad_input
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("radiograph")

    def compute(self, op_input, op_output, context) -> None:
        try:
            scan = scan_input(self.input_path)
            path = scan.image
            for skipped, reason in scan.skipped:
                logger.warning("skipped %s: %s", skipped, reason)
            radiograph = read_chest_radiograph(path, require_chest=self.require_chest)
        except CXRDataError as error:
            if self.on_bad_input is None:
                raise
            # An error raised here is printed by Holoscan as GXF errors and a traceback before the app can say
            # anything; handed over instead, nothing is emitted, the graph ends and the app reports it once.
            self.on_bad_input(error)
            return
        radiograph.skipped_inputs = [{"file": str(file), "reason": reason} for file, reason in scan.skipped]
        logger.info("read %s: %s %s, %dx%d", path, radiograph.header.get("Modality", "?"),
                    radiograph.header.get("BodyPartExamined", "?"), *radiograph.image.shape[::-1])
        op_output.emit(radiograph, "radiograph")


class ChestClassifierOperator(Operator):
    """Class probabilities from the bundle's ``configs/inference.json`` network, preprocessing and postprocessing.

    Named input ``radiograph``; named output ``classification`` (a
    :class:`~bundle.deploy.classifier.Classification`).
    """

    def __init__(self, fragment: Fragment, *args, model: BundleModel, **kwargs) -> None:
        self.model = model
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("radiograph")
        spec.output("classification")

    def compute(self, op_input, op_output, context) -> None:
        result = classify(self.model, op_input.receive("radiograph"))
        logger.info("probabilities %s; positive at %s: %s", {k: round(v, 4) for k, v in result.probabilities.items()},
                    describe(self.model.threshold, self.model.class_names), result.positive or "none")
        op_output.emit(result, "classification")


class SaliencyOverlayOperator(Operator):
    """Grad-CAM maps and overlay PNGs by the bundle's ``SaliencyWriter`` under ``<output>/saliency``.

    Passes the classification on with ``saliency_files`` filled in.
    """

    def __init__(self, fragment: Fragment, *args, model: BundleModel, output_folder: str | os.PathLike,
                 **kwargs) -> None:
        self.model, self.output_folder = model, Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("classification")
        spec.output("classification")

    def compute(self, op_input, op_output, context) -> None:
        result: Classification = op_input.receive("classification")
        write_saliency(self.model, result, self.output_folder)
        op_output.emit(result, "classification")


class StructuredReportWriterOperator(Operator):
    """Write the classification as a DICOM Comprehensive 3D SR (``classification_sr.dcm``).

    Named output ``sr_file``: the path written.
    """

    def __init__(self, fragment: Fragment, *args, model: BundleModel, output_folder: str | os.PathLike,
                 **kwargs) -> None:
        self.model, self.output_folder = model, Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("classification")
        spec.output("sr_file")

    def compute(self, op_input, op_output, context) -> None:
        path = write_structured_report(self.model, op_input.receive("classification"), self.output_folder)
        logger.info("wrote %s", path)
        op_output.emit(str(path), "sr_file")


class ClassificationJsonWriterOperator(Operator):
    """Write ``classification.json`` last, so that it lists the SR and the saliency files."""

    def __init__(self, fragment: Fragment, *args, model: BundleModel, output_folder: str | os.PathLike,
                 **kwargs) -> None:
        self.model, self.output_folder = model, Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("classification")
        spec.input("sr_file")

    def compute(self, op_input, op_output, context) -> None:
        result = op_input.receive("classification")
        sr_file = op_input.receive("sr_file")
        path = write_classification_json(self.model, result, self.output_folder, sr_file=sr_file)
        logger.info("wrote %s", path)
