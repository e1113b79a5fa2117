"""The classification as a DICOM Structured Report (highdicom ``Comprehensive3DSR``, TID 1500).

Why highdicom and not the App SDK's ``DICOMTextSRWriterOperator``: that operator writes a
Basic Text SR holding one free-text string, which a PACS can display but nothing can read
back as data. A TID 1500 "Imaging Measurement Report" (the template AI results use, e.g. in
the IHE AI Results profile) keeps one measurement group per class with:

* the finding (class) as a code in the private coding scheme ``99CXRDISTILL`` (declared in
  the CodingSchemeIdentificationSequence; class names come from the bundle config and are
  not mapped to SNOMED CT, which would be a clinical claim);
* the probability: (122157, DCM, "Probability"), unit (1, UCUM, "no units");
* a qualitative evaluation "Present" (52101004, SCT) or "Absent" (272519000, SCT) at the
  class's threshold (the bundle's, chosen per class on the validation split: :mod:`bundle.thresholds`);
* the algorithm (name, version, network, threshold) and the source image (SOP Class and
  Instance UIDs) it was computed from.

The SR is in the source's study (same StudyInstanceUID and patient), in a new series, and
references the source image in its evidence. "Not for diagnostic use" is stated three
times: ``ContentQualification = RESEARCH`` (the DICOM attribute for exactly this), the
``SeriesDescription``, and a (121106, DCM, "Comment") TEXT item in the report.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from bundle.thresholds import describe

from .classifier import Classification
from .model import BundleModel
from .writers import NOT_FOR_DIAGNOSTIC_USE

if TYPE_CHECKING:
    import pydicom

__all__ = ["CODING_SCHEME", "SR_FILENAME", "build_structured_report", "write_structured_report"]

CODING_SCHEME = "99CXRDISTILL"
SR_FILENAME = "classification_sr.dcm"
SR_SERIES_NUMBER = 9901
_PLAIN_CHEST_XRAY = ("399208008", "SCT", "Plain chest X-ray")


def _class_codes(class_names: list[str]) -> list[str]:
    """Code values (SH: at most 16 characters, unique): the upper-case name, else ``CLASS<i>``."""
    values = []
    for index, name in enumerate(class_names):
        value = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
        values.append(value if value and len(value) <= 16 and value not in values else f"CLASS{index}")
    return values


def build_structured_report(model: BundleModel, result: Classification) -> pydicom.Dataset:
    """A Comprehensive 3D SR with the classification of ``result`` (see the module docstring)."""
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    source = result.radiograph.header
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version or "unknown",
        parameters=[f"network={model.network_name}", f"threshold={describe(model.threshold, model.class_names)}", f"task={model.task}"])
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=model.name, model_name=model.network_name, manufacturer_name="cxr-distill"))
    groups = []
    for name, value in zip(model.class_names, _class_codes(model.class_names)):
        finding = hd.sr.CodedConcept(value, CODING_SCHEME, name[:64])
        present = name in result.positive
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name[:64]),
            finding_type=finding,
            algorithm_id=algorithm,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            measurements=[hd.sr.Measurement(name=codes.DCM.Probability, value=float(result.probabilities[name]),
                                            unit=codes.UCUM.NoUnits, algorithm_id=algorithm)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=finding, value=codes.SCT.Present if present else codes.SCT.Absent)],
        ))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=hd.sr.CodedConcept(*_PLAIN_CHEST_XRAY),
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=NOT_FOR_DIAGNOSTIC_USE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="cxr-distill",
        manufacturer_model_name=f"{model.name} {model.network_name}"[:64],
        software_versions=model.version or "unknown",
        series_description="AI classification - NOT FOR DIAGNOSTIC USE",
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        coding_schemes=[CodingSchemeIdentificationItem(
            designator=CODING_SCHEME, name="cxr-distill class names", responsible_organization="cxr-distill")],
        is_complete=True,
        is_final=False,  # nobody verified it
        is_verified=False,
    )


def write_structured_report(model: BundleModel, result: Classification, output_dir: str | os.PathLike) -> Path:
    """Write the SR to ``<output_dir>/classification_sr.dcm`` (a DICOM Part 10 file); returns its path."""
    from bundle.handlers.checkpoint import write_atomic

    dataset = build_structured_report(model, result)
    path = Path(output_dir) / SR_FILENAME
    write_atomic(path, lambda stream: dataset.save_as(stream, enforce_file_format=True))
    return path
