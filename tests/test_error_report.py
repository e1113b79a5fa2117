"""bundle.error_report: the data error's own message is the last thing an uncaught error prints."""

from __future__ import annotations

import errno
import resource
import sys

import numpy as np
import pytest
from PIL import Image

from bundle import error_report
from bundle.data import CXRDataError, LoadCXRd


def _raise_wrapped(error: BaseException) -> BaseException:
    """``error`` as MONAI's config parser delivers it: inside 'Failed to evaluate' and 'Failed to instantiate'."""
    try:
        try:
            raise error
        except BaseException as inner:
            raise RuntimeError("Failed to instantiate component 'bundle.data.load_splits'") from inner
    except RuntimeError as middle:
        try:
            raise RuntimeError("Failed to evaluate ConfigExpression: \"$@data#splits.summary()\"") from middle
        except RuntimeError as outer:
            return outer


def _report(error: BaseException, monkeypatch, tmp_path, capsys, **env) -> list[str]:
    monkeypatch.setenv(error_report.TRACEBACK_FILE_ENV, str(tmp_path / "traceback.txt"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    error_report.report_uncaught(type(error), error, error.__traceback__)
    return capsys.readouterr().err.rstrip().splitlines()


def test_a_wrapped_data_error_is_the_last_line_and_the_traceback_goes_to_a_file(monkeypatch, tmp_path, capsys):
    error = _raise_wrapped(CXRDataError("/data/labels.csv", "no data rows (the file has only its header)",
                                        advice="Add rows to the label file."))
    lines = _report(error, monkeypatch, tmp_path, capsys)
    assert lines == [
        f"cxr-distill: stopped by a data error (full traceback in {tmp_path / 'traceback.txt'}; "
        f"CXR_DISTILL_TRACEBACK=1 prints it here)",
        "error: /data/labels.csv: no data rows (the file has only its header)",
        "Add rows to the label file.",
    ]
    saved = (tmp_path / "traceback.txt").read_text()
    assert "Failed to evaluate" in saved and "CXRDataError" in saved and "Traceback" in saved


def test_the_switch_prints_the_full_traceback_before_the_message(monkeypatch, tmp_path, capsys):
    error = _raise_wrapped(CXRDataError("/x.png", "constant image: every pixel is the same (all black)"))
    lines = _report(error, monkeypatch, tmp_path, capsys, CXR_DISTILL_TRACEBACK="1")
    assert lines[0].startswith("Traceback (most recent call last)") and any("Failed to evaluate" in x for x in lines)
    assert lines[-1] == "error: /x.png: constant image: every pixel is the same (all black)"


def test_too_many_open_files_names_the_limit_not_a_file(monkeypatch, tmp_path, capsys):
    """What PyTorch's DataLoader raises when the workers' shared-memory tensors use up the open-file limit."""
    try:
        try:
            raise OSError(errno.EMFILE, "Too many open files", "/tmp/tmpqzt634ni")
        except OSError as exc:
            raise RuntimeError("Too many open files. Communication with the workers is no longer possible.") from exc
    except RuntimeError as exc:
        error = exc
    lines = _report(error, monkeypatch, tmp_path, capsys)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert lines[0].startswith("cxr-distill: stopped by a system limit (")
    assert lines[-1].startswith(f"error: too many open files for this process (opening /tmp/tmpqzt634ni; this shell "
                                f"allows {soft:,} per process): raise the limit before the run (`ulimit -n ")
    assert lines[-1].endswith("or use fewer DataLoader workers (--num_workers)")


def test_other_errors_are_printed_as_python_prints_them(monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.setattr(error_report, "_previous_hook", lambda *args: seen.append(args))
    error = _raise_wrapped(ZeroDivisionError("division by zero"))
    assert _report(error, monkeypatch, tmp_path, capsys) == [] and seen and seen[0][1] is error
    assert not (tmp_path / "traceback.txt").exists()


def test_importing_bundle_installs_the_hook():
    assert sys.excepthook is error_report.report_uncaught


def test_a_data_error_from_a_dataloader_worker_is_the_last_line_too(tmp_path, monkeypatch, capsys):
    """A worker's error reaches the main process as text (MONAI wraps it in a RuntimeError, PyTorch re-raises
    that as ``RuntimeError(traceback text)``): the hook finds the data error's line in it."""
    from monai.data import DataLoader, Dataset

    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    loader = DataLoader(Dataset([{"image": str(path)}], transform=LoadCXRd("image")), batch_size=1, num_workers=1,
                        multiprocessing_context="fork" if sys.platform == "linux" else None)
    with pytest.raises(RuntimeError) as info:
        next(iter(loader))
    assert "DataLoader worker process 0" in str(info.value)
    assert not any(isinstance(e, CXRDataError) for e in (info.value, info.value.__cause__, info.value.__context__))
    lines = _report(_raise_wrapped(info.value), monkeypatch, tmp_path, capsys)
    assert lines[-2] == f"error: {path}: constant image: every pixel is the same (all black); nothing to classify"
    assert lines[-1].startswith("Fix or remove this file;")  # the loader's advice, also from a worker


def test_a_checkpoint_that_does_not_fit_is_the_last_line(monkeypatch, tmp_path, capsys):
    from bundle.checkpoints import CheckpointError

    error = _raise_wrapped(CheckpointError("checkpoint /m/model.pt does not match the teacher network (DenseNet121):\n"
                                           "  class_layers.out.weight: checkpoint (3, 1024), network (5, 1024)"))
    lines = _report(error, monkeypatch, tmp_path, capsys)
    assert lines[0].startswith("cxr-distill: stopped by a checkpoint error")
    assert lines[-1] == "  class_layers.out.weight: checkpoint (3, 1024), network (5, 1024)"
