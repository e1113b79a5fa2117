"""The last line a user reads is the data error's own message, not the config parser's wrapper around it.

Under ``python -m monai.bundle run ...`` an error raised while MONAI evaluates a config expression
(reading the data set, the pre-training check, an image the loader refuses) reaches the user at the
end of a 50-100 line chained traceback whose last line is ``RuntimeError: Failed to evaluate ...``.
Importing :mod:`bundle` (every config of the bundle does) installs :func:`report_uncaught` as
``sys.excepthook``: when an uncaught error is a :class:`~bundle.data.errors.CXRDataError`, or was
raised from or while handling one (else: an ``OSError`` that names a file, such as a missing
checkpoint), the full traceback is written to a file and the message (the file, the problem,
what to do) is the last thing printed::

    cxr-distill: stopped by a data error (full traceback in /tmp/cxr-distill-error-20261201-101500-4242.txt;
    CXR_DISTILL_TRACEBACK=1 prints it here)
    error: /data/labels.csv: 2 of 40 images do not exist, e.g. [...]

``CXR_DISTILL_TRACEBACK=1`` prints the whole traceback before that (the file is still written);
``CXR_DISTILL_TRACEBACK_FILE`` chooses the file. Any other uncaught error is printed as Python
prints it. The exit status stays 1.

Under ``torchrun`` every process usually meets the same data error (each reads the data set and the
checkpoints). It reads as in one process: the first process (``RANK`` 0) prints the message, the others
print nothing (and wait a few seconds before they exit, so that the first process is the one torchrun
reports), and every failing process records the message in the error file that
``torch.distributed.elastic`` names in ``TORCHELASTIC_ERROR_FILE`` (the file its ``record`` decorator
would write), so torchrun's closing failure summary shows the message (``traceback : error: ...``) instead
of "To enable traceback see ...". The message bypasses the ``[rank<N>]:`` prefix that
``torch.distributed.init_process_group`` adds to uncaught errors.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import tempfile
import time
import traceback
from types import TracebackType

from .checkpoints import CheckpointError
from .data.errors import CXRDataError
from .data.io import load_advice

__all__ = ["data_error_in", "install", "report_uncaught", "TRACEBACK_ENV", "TRACEBACK_FILE_ENV"]

TRACEBACK_ENV = "CXR_DISTILL_TRACEBACK"
TRACEBACK_FILE_ENV = "CXR_DISTILL_TRACEBACK_FILE"
# PyTorch re-raises a DataLoader worker's error with the worker's traceback as its message
_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback", re.S)
_WORKER_DATA_ERROR = re.compile(r"^(?:[\w.]+\.)?(?:CXRDataError|DataProblem): (.+)$", re.M)
_previous_hook = sys.excepthook
# torchrun stops every process when the first one fails and names that one the root cause
_OTHER_RANKS_DELAY_S = 5.0


def data_error_in(error: BaseException | None) -> CXRDataError | CheckpointError | OSError | None:
    """The user-facing error behind ``error``: itself or an error of its ``__cause__`` / ``__context__`` chain
    that is a :class:`CXRDataError`, else a :class:`~bundle.checkpoints.CheckpointError` (a checkpoint that
    cannot be read or does not fit), else an ``OSError`` naming a file (a missing checkpoint, a folder that
    cannot be written ...); None when there is none of them."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return next((e for e in chain if isinstance(e, CXRDataError)), None) or next(
        (found for found in map(_from_worker, chain) if found is not None), None) or next(
        (e for e in chain if isinstance(e, CheckpointError)), None) or next(
        (e for e in chain if isinstance(e, OSError) and getattr(e, "filename", None)), None)


def _from_worker(error: BaseException) -> CXRDataError | None:
    """The data error a DataLoader worker raised, rebuilt from the text PyTorch re-raises in its place.

    A worker's error crosses to the main process as text (``Caught RuntimeError in DataLoader
    worker process 0. Original Traceback ...``; MONAI wraps a transform's error in a RuntimeError
    first), so its chain is lost; the traceback's ``...CXRDataError: <file>: <problem>`` line is not.
    """
    text = str(error)
    if not _WORKER_ERROR.match(text):
        return None
    found = _WORKER_DATA_ERROR.findall(text)
    return CXRDataError(None, found[-1].strip(), advice=load_advice()) if found else None


def _message(error: CXRDataError | CheckpointError | OSError) -> str:
    if isinstance(error, CheckpointError):
        return str(error)
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):  # not the file's fault
        return _too_many_open_files(error)
    if isinstance(error, OSError) and not isinstance(error, CXRDataError):
        if error.strerror and str(error.filename) in error.strerror:  # a message of ours that names the file
            return error.strerror
        return f"{error.filename}: {error.strerror or error}"
    text = str(error)
    if _WORKER_ERROR.match(error.problem or ""):  # the worker's last line: "...CXRDataError: <file>: <problem>"
        last = text.rstrip().splitlines()[-1]
        text = last.split("Error: ", 1)[1] if "Error: " in last else last
    return text


def _too_many_open_files(error: OSError) -> str:
    scope = "this process" if error.errno == errno.EMFILE else "the whole system"
    try:
        import resource  # not on Windows

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit, raise_to = f"; this shell allows {soft:,} per process", f" (`ulimit -n {min(max(hard, soft), 65536)}`)"
    except (ImportError, ValueError, OSError):
        limit, raise_to = "", ""
    return (f"too many open files for {scope} (opening {error.filename}{limit}): raise the limit before the "
            f"run{raise_to}, or use fewer DataLoader workers (--num_workers)")


def _traceback_file() -> str:
    chosen = os.environ.get(TRACEBACK_FILE_ENV)
    if chosen:
        return chosen
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"cxr-distill-error-{stamp}-{os.getpid()}.txt")


def _torchrun_rank() -> int | None:
    """This process's rank when ``torchrun`` (torch.distributed.elastic) started it, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return None
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _record_for_torchrun(message: str) -> None:
    """Write ``message`` to torch.distributed.elastic's error file, which torchrun's failure summary shows."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w") as stream:  # ErrorHandler's format with a plain message: shown as it is
            json.dump({"message": message, "timestamp": int(time.time())}, stream)
    except OSError:
        pass


def report_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    """``sys.excepthook``: a data error's message last, its traceback in a file (see the module docstring)."""
    data_error = data_error_in(error)
    if data_error is None:
        _previous_hook(kind, error, trace)
        return
    try:
        sys.stdout.flush()  # what the run printed comes first, also when stdout is a pipe or a log file
    except (OSError, ValueError):
        pass
    message = f"error: {_message(data_error)}"
    advice = getattr(data_error, "advice", None)
    if advice is None and isinstance(data_error, CXRDataError) and _WORKER_ERROR.match(data_error.problem or ""):
        advice = load_advice()  # a worker's error comes back without its attributes: it was the loader's
    rank = _torchrun_rank()
    if rank is not None:
        _record_for_torchrun(message + (f" {advice}" if advice else ""))
        if rank > 0:  # the first process says it (the others meet the same error): give it time to be first
            time.sleep(_OTHER_RANKS_DELAY_S)
            return
    full = "".join(traceback.format_exception(kind, error, trace))
    path = _traceback_file()
    try:
        with open(path, "w") as stream:
            stream.write(full)
        where = f"full traceback in {path}"
    except OSError as exc:  # never hide the message behind a second error
        where = f"the traceback could not be written to {path}: {exc.strerror or exc}"
    # under torchrun, past the "[rank0]:" prefix that init_process_group's hook puts on what sys.stderr gets
    stream = (sys.__stderr__ or sys.stderr) if rank is not None else sys.stderr
    if os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes", "full"):
        stream.write(full)
        stream.write("\n")
    kind_of_error = ("a data error" if isinstance(data_error, CXRDataError) else
                     "a checkpoint error" if isinstance(data_error, CheckpointError) else
                     "a system limit" if data_error.errno in (errno.EMFILE, errno.ENFILE) else "a file error")
    stream.write(f"cxr-distill: stopped by {kind_of_error} ({where}; {TRACEBACK_ENV}=1 prints it here)\n")
    stream.write(f"{message}\n")
    if advice:
        stream.write(f"{advice}\n")
    stream.flush()


def install() -> None:
    """Make :func:`report_uncaught` the process's ``sys.excepthook`` (once; other errors go to the previous hook)."""
    global _previous_hook
    if sys.excepthook is not report_uncaught:
        _previous_hook = sys.excepthook
        sys.excepthook = report_uncaught
