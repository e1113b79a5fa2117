"""The MONAI Deploy application: one chest CR/DX DICOM in; classification JSON, DICOM SR and Grad-CAM out.

Graph (one pass; the loader has a ``CountCondition`` of 1)::

    ChestDicomLoaderOperator --radiograph--> ChestClassifierOperator --classification-->
    SaliencyOverlayOperator --classification--> StructuredReportWriterOperator --sr_file--+
                             \\--classification---------------------------------------------> ClassificationJsonWriterOperator

Paths follow the App SDK: ``-i/--input``, ``-o/--output``, ``-m/--model`` on the command
line, else ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH``, ``HOLOSCAN_MODEL_PATH`` (what a
MONAI Application Package sets), else ``input``, ``output``, ``models`` in the working
folder. Why the operators are custom: see :mod:`bundle.deploy.operators`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from holoscan.conditions import CountCondition
from monai.deploy.core import AppContext, Application

from bundle.data.errors import CXRDataError

from .model import BundleModel, load_bundle
from .operators import (
    ChestClassifierOperator,
    ChestDicomLoaderOperator,
    ClassificationJsonWriterOperator,
    SaliencyOverlayOperator,
    StructuredReportWriterOperator,
)

__all__ = ["ChestXRayClassifierApp"]

logger = logging.getLogger(__name__)


class ChestXRayClassifierApp(Application):
    """Classify one chest radiograph with the cxr-distill bundle and write JSON, SR and saliency overlays.

    Args:
        argv: command line for the SDK's argument parser (its first item is the program);
            ignored when ``app_context`` is given.
        app_context: input / output / model paths (``monai.deploy.core.AppContext``); built from
            ``argv`` and the ``HOLOSCAN_*`` variables when ``None``.
        overrides: bundle config ids to override (``{"image_size": 64}``; tests use it).
        device: overrides the bundle config's device (default: CUDA when available).
        model: the bundle, already loaded (the command loads it first, so that a bad model path is
            reported before Holoscan starts); else loaded from the app context's model path.
    """

    name = "cxr-distill-classifier"
    description = "Chest X-ray classification (cxr-distill bundle): JSON, DICOM SR and Grad-CAM overlay"

    def __init__(self, argv: Sequence[str] | None = None, *, app_context: AppContext | None = None,
                 overrides: Mapping[str, Any] | None = None, device: str | None = None,
                 model: BundleModel | None = None) -> None:
        self._app_context = app_context
        self._overrides = dict(overrides or {})
        self._device = device
        self.model: BundleModel | None = model
        self.bad_input: CXRDataError | None = None
        if argv is None:
            super().__init__()
        else:
            super().__init__(list(argv))

    def run(self) -> None:
        """Run the graph once.

        Raises:
            CXRDataError: the input is unusable (naming the file); nothing was written.
        """
        self.bad_input = None
        super().run()
        if self.bad_input is not None:
            raise self.bad_input

    def _stop_on_bad_input(self, error: CXRDataError) -> None:
        self.bad_input = error

    def compose(self) -> None:
        app_context = self._app_context or Application.init_app_context(self.argv)
        input_path = Path(app_context.input_path)
        output_folder = Path(app_context.output_path)
        output_folder.mkdir(parents=True, exist_ok=True)
        if self.model is None:
            self.model = load_bundle(app_context.model_path, device=self._device, overrides=self._overrides)
        model = self.model
        logger.info("bundle %s %s (%s, checkpoint %s) on %s", model.name, model.version, model.network_name,
                    model.checkpoint, model.device)

        loader = ChestDicomLoaderOperator(self, CountCondition(self, 1), input_path=input_path,
                                          require_chest=model.require_chest, on_bad_input=self._stop_on_bad_input,
                                          name="dicom_loader")
        classifier = ChestClassifierOperator(self, model=model, name="classifier")
        saliency = SaliencyOverlayOperator(self, model=model, output_folder=output_folder, name="saliency")
        sr_writer = StructuredReportWriterOperator(self, model=model, output_folder=output_folder, name="sr_writer")
        json_writer = ClassificationJsonWriterOperator(self, model=model, output_folder=output_folder,
                                                       name="json_writer")

        self.add_flow(loader, classifier, {("radiograph", "radiograph")})
        self.add_flow(classifier, saliency, {("classification", "classification")})
        self.add_flow(saliency, sr_writer, {("classification", "classification")})
        self.add_flow(saliency, json_writer, {("classification", "classification")})
        self.add_flow(sr_writer, json_writer, {("sr_file", "sr_file")})
