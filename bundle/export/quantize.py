"""int8 static quantization of an exported ``model.onnx`` with ONNX Runtime (QDQ), calibrated on real training images.

:func:`quantize_int8` writes ``models/model_int8.onnx`` beside the fp32 ``models/model.onnx`` and
``models/model_int8.json``, which records how it was made and how good it is:

* **calibration**: ONNX Runtime's static quantization (``quantize_static``, QDQ format: QuantizeLinear /
  DequantizeLinear pairs around each quantized operator, which ONNX Runtime's CPU provider fuses into int8
  kernels), weights int8 per output channel, activations uint8 with ranges from the calibration images
  (``MinMax`` by default; ``Entropy`` / ``Percentile`` on request). The calibration images are the model's
  own data set's *training* split (the same patient-level split as training, ``split_seed``), read with the
  bundle's inference preprocessing; their paths are listed in the record, so the calibration can be redone.
  Batch norm is folded into the convolutions first (``quant_pre_process``).
* **accuracy check**: the fp32 and int8 models (both in ONNX Runtime) on a labelled split the calibration did
  not see (default: test): the macro AUC of each, the change per class, and the largest change of a
  probability. The export fails when int8 loses more than ``max_auc_drop`` of macro AUC (default 0.005).

Why uint8 activations and int8 per-channel weights in a 7-bit range (``reduce_range``): U8S8 is the combination
ONNX Runtime's x86 kernels are built for; per-channel weights matter for depthwise convolutions (MobileNetV3),
whose filters have very different ranges; and on CPUs without VNNI (AVX2 only, like the project's EPYC) those
kernels multiply with ``VPMADDUBSW``, whose 16-bit sums saturate with full 8-bit weights. Measured on the NIH
compact student (95 test radiographs): full-range weights lose 0.039 macro AUC (largest probability change
0.27), 7-bit weights gain 0.003 (0.09); ``docs/fast_inference.md`` has the table.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError

__all__ = ["CALIBRATION_METHODS", "Int8Report", "calibration_records", "quantize_int8"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class Int8Report:
    """What :func:`quantize_int8` made and measured (also written as ``model_int8.json``)."""

    model: str
    fp32_model: str
    method: str
    quant_format: str
    activation_type: str
    weight_type: str
    per_channel: bool
    calibration: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def calibration_records(dataset: str, dataset_dir: str | os.PathLike, split_seed: int = 0,
                        calibration_images: int = 128, check_split: str = "test",
                        options: Mapping[str, Any] | None = None) -> tuple[list[dict], list[dict], Any]:
    """``(calibration records, check records, splits)``: the first ``calibration_images`` of the training split (in
    a seeded random order) and the whole ``check_split``, of ``dataset`` read as training reads it."""
    from bundle.data import load_splits

    splits = load_splits(dataset, dataset_dir, seed=split_seed, options=dict(options or {}))
    train = list(splits.train)
    order = np.random.default_rng(split_seed).permutation(len(train))
    calibration = [train[i] for i in order[:calibration_images]]
    check = list(getattr(splits, check_split))
    if not calibration or not check:
        raise ExportError(f"{dataset} at {dataset_dir}: empty calibration ({len(calibration)}) or "
                          f"{check_split} ({len(check)}) split")
    return calibration, check, splits


def _images(records: Sequence[Mapping[str, Any]], preprocessing: Any) -> Iterator[tuple[Mapping[str, Any], np.ndarray]]:
    """(record, (1, 1, S, S) float32) for every record the loader reads; unreadable ones are skipped."""
    for record in records:
        sample = preprocessing({"image": record["image"], "filename": str(record["image"])})
        if sample.get("error"):
            continue
        yield record, np.ascontiguousarray(np.asarray(sample["image"], dtype=np.float32)[None])


def _session(path: Path, threads: int = 0) -> Any:
    from bundle.runtime import onnxruntime_session

    return onnxruntime_session(path, threads)


def _probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    if task == "multiclass":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def _auc(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], task: str) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    if task == "multiclass" and labels.ndim == 1:
        labels = np.eye(len(class_names))[labels.astype(int)]
    per_class = {}
    for k, name in enumerate(class_names):
        column = labels[:, k]
        if 0 < column.sum() < len(column):
            per_class[name] = float(roc_auc_score(column, scores[:, k]))
    return {"auc_macro": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
            "auc_per_class": per_class}


def quantize_int8(fp32_model: str | os.PathLike, out_model: str | os.PathLike, preprocessing: Any,
                  calibration: Sequence[Mapping[str, Any]], check: Sequence[Mapping[str, Any]],
                  class_names: Sequence[str], task: str = "multilabel", method: str = "minmax",
                  max_auc_drop: float = 0.005, calibration_source: Mapping[str, Any] | None = None,
                  check_split: str = "test") -> Int8Report:
    """Quantize ``fp32_model`` to ``out_model`` (QDQ, int8) calibrated on ``calibration`` and checked on ``check``.

    Args:
        fp32_model: the exported ``model.onnx``.
        out_model: where the int8 model goes (``models/model_int8.onnx``); its record is the same path with
            ``.json``.
        preprocessing: the bundle's inference preprocessing (``{"image": path} -> (1, S, S)``).
        calibration, check: data set records (``image`` path, ``label``) for calibration and for the check.
        class_names, task: the model's.
        method: ``minmax``, ``entropy`` or ``percentile`` (ONNX Runtime's calibrators).
        max_auc_drop: the most macro AUC int8 may lose on ``check``; more is an :class:`ExportError`.
        calibration_source: what to record about the images' origin (data set, folder, split, seed).
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:
        raise ExportError("int8 export needs onnx and onnxruntime: pip install 'cxr-distill[export]'") from error
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    start = time.perf_counter()
    fp32_model, out_model = Path(fp32_model), Path(out_model)
    calibration_used: list[str] = []
    arrays = []
    for record, array in _images(calibration, preprocessing):
        calibration_used.append(str(record["image"]))
        arrays.append(array)
    if not arrays:
        raise ExportError("no calibration image could be read")
    input_name = onnx.load(str(fp32_model), load_external_data=False).graph.input[0].name

    batches = [np.concatenate(arrays[i:i + 16]) for i in range(0, len(arrays), 16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            array = next(self.items, None)
            return None if array is None else {input_name: array}

    prepared = out_model.with_name(out_model.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=False)
        quantize_static(
            str(prepared), str(out_model), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"CalibMaxIntermediateOutputs": 16})
    except Exception as error:  # onnx / onnxruntime errors of many kinds
        raise ExportError(f"int8 quantization of {fp32_model} failed: {type(error).__name__}: {error}") from error
    finally:
        prepared.unlink(missing_ok=True)
        for leftover in out_model.parent.glob("augmented_model*.onnx"):
            leftover.unlink(missing_ok=True)

    report = Int8Report(
        model=out_model.name, fp32_model=fp32_model.name, method=method, quant_format="QDQ",
        activation_type="uint8 (per tensor, asymmetric)",
        weight_type="int8 (per output channel, symmetric, 7-bit range: reduce_range)", per_channel=True,
        calibration={**dict(calibration_source or {}), "images": len(calibration_used), "files": calibration_used})
    if check:
        report.check = check_int8(fp32_model, out_model, preprocessing, check, class_names, task, check_split)
    report.seconds = round(time.perf_counter() - start, 1)
    out_model.with_suffix(".json").write_text(report.to_json())
    drop = report.check.get("auc_macro_change")
    if drop is not None and np.isfinite(drop) and -drop > max_auc_drop:
        raise ExportError(f"int8 model loses {-drop:.4f} macro AUC on the {check_split} split "
                          f"(fp32 {report.check['fp32']['auc_macro']:.4f}, int8 {report.check['int8']['auc_macro']:.4f}), "
                          f"more than {max_auc_drop}; try --calibration_method entropy or percentile, or more --calibration_images")
    return report


def check_int8(fp32_model: Path, int8_model: Path, preprocessing: Any, records: Sequence[Mapping[str, Any]],
               class_names: Sequence[str], task: str, split: str = "test") -> dict[str, Any]:
    """fp32 against int8 (both in ONNX Runtime) on labelled ``records``: macro and per-class AUC, probability changes."""
    sessions = {"fp32": _session(fp32_model), "int8": _session(int8_model)}
    scores: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    labels = []
    for record, array in _images(records, preprocessing):
        for kind, session in sessions.items():
            logits = session.run(None, {session.get_inputs()[0].name: array})[0]
            scores[kind].append(_probabilities(logits, task)[0])
        labels.append(np.asarray(record.get("label"), dtype=np.float64))
    if not labels:
        raise ExportError(f"no image of the {split} split could be read for the int8 check")
    fp32, int8 = np.stack(scores["fp32"]), np.stack(scores["int8"])
    y = np.stack(labels)
    result: dict[str, Any] = {"split": split, "images": len(labels),
                              "max_abs_probability_change": float(np.abs(int8 - fp32).max()),
                              "mean_abs_probability_change": float(np.abs(int8 - fp32).mean())}
    if task == "multiclass":
        result["same_predicted_class"] = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    result["fp32"], result["int8"] = _auc(y, fp32, class_names, task), _auc(y, int8, class_names, task)
    result["auc_macro_change"] = result["int8"]["auc_macro"] - result["fp32"]["auc_macro"]
    result["auc_change_per_class"] = {name: result["int8"]["auc_per_class"][name] - value
                                      for name, value in result["fp32"]["auc_per_class"].items()}
    return result
