"""``metadata.json`` against the MONAI bundle schema, when the schema can be had.

The schema is the file named by ``metadata.json``'s ``schema`` URL (MONAI's own
``meta_schema_20240725.json``). It is looked for, in this order: a file given by the user (then it
must exist), the copy beside this project's test data (``$CXR_DATA_ROOT/../monai`` or
``<repo>/../shared/monai``), the user's cache (``$XDG_CACHE_HOME/cxr-distill``, else
``~/.cache/cxr-distill``), and last MONAI's own download (``monai.apps.utils.download_url``, as
``python -m monai.bundle verify_metadata`` does) into that cache, so later exports work offline.
When none of them gives a schema (offline, behind a proxy), the export goes on and says that the
metadata was not validated: :class:`MetadataCheck` records what happened. Metadata that the schema
rejects always stops the export.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import ExportError

__all__ = ["SCHEMA_NAME", "MetadataCheck", "cache_dir", "local_schema_copies", "validate_metadata",
           "verify_metadata_offline"]

SCHEMA_NAME = "meta_schema_20240725.json"
#: seconds one network operation of the schema download may take before the export goes on without it
DOWNLOAD_TIMEOUT = 20.0


@dataclass(frozen=True)
class MetadataCheck:
    """Whether ``metadata.json`` was validated, against which schema file, or why it was not."""

    validated: bool
    schema: Path | None = None
    skipped_because: str | None = None

    def __str__(self) -> str:
        if self.validated:
            return f"metadata.json is valid against {self.schema}"
        return (f"configs/metadata.json was not validated against the bundle schema: {self.skipped_because}; "
                "the bundle was exported without that check (pass --schema with a local copy of the schema to "
                "validate it)")


def cache_dir() -> Path:
    """Where a downloaded schema is kept: ``$XDG_CACHE_HOME/cxr-distill``, else ``~/.cache/cxr-distill``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxr-distill"


def local_schema_copies(repo_root: str | os.PathLike, name: str = SCHEMA_NAME) -> list[Path]:
    """Places a copy of the schema may already lie: beside the test data, then the user's cache."""
    data_root = os.environ.get("CXR_DATA_ROOT")
    return ([Path(data_root).parent / "monai" / name] if data_root else []) + [
        Path(repo_root).parent / "shared" / "monai" / name, cache_dir() / name]


def verify_metadata_offline(meta_file: str | os.PathLike, schema: str | os.PathLike) -> None:
    """``monai.bundle.verify_metadata`` against a local copy of the schema (it downloads only a missing file).

    Raises:
        ExportError: the schema file is missing, or the metadata is not valid against it.
    """
    from monai.bundle import verify_metadata

    schema = Path(schema)
    if not schema.is_file():
        raise ExportError(f"bundle schema not found: {schema} (given with --schema)")
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / schema.name  # MONAI's verify_metadata may write where it reads: never the user's copy
        shutil.copy(schema, local)
        try:
            verify_metadata(meta_file=str(meta_file), filepath=str(local))
        except ValueError as error:
            raise ExportError(f"{meta_file} is not valid against {schema.name}: {error}") from error


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib (under MONAI's download_url) waits forever by default; a black-holed network must not hang the export."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(url: str, target: Path) -> str | None:
    """Download the schema with MONAI's ``download_url`` into ``target``; returns why not, or None."""
    from monai.apps.utils import download_url

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            download_url(url=url, filepath=str(partial), progress=False)
        json.loads(partial.read_text())  # an HTML error page or a cut-off file is no schema
    except Exception as error:  # URLError, HTTPError, timeouts, OSError, RuntimeError, JSONDecodeError ...
        partial.unlink(missing_ok=True)
        return f"{url} could not be downloaded ({type(error).__name__}: {error})"
    os.replace(partial, target)
    return None


def validate_metadata(meta_file: str | os.PathLike, schema: str | os.PathLike | None = None, *,
                      search: Sequence[str | os.PathLike] = (), download: bool = True) -> MetadataCheck:
    """Validate ``meta_file`` against the bundle schema if one can be had (see the module docstring).

    Args:
        meta_file: the ``metadata.json`` to check; its ``schema`` field names the schema.
        schema: a local copy given by the user: it must exist, and it is the one used.
        search: other places a copy may lie, tried in order (e.g. :func:`local_schema_copies`).
        download: fetch the schema from its URL into :func:`cache_dir` when no copy is found.

    Raises:
        ExportError: ``schema`` was given and does not exist, or the metadata is not valid.
    """
    if schema is not None:
        verify_metadata_offline(meta_file, schema)
        return MetadataCheck(True, Path(schema))
    url = str(json.loads(Path(meta_file).read_text()).get("schema") or "")
    name = Path(urlparse(url).path).name or SCHEMA_NAME
    found = next((Path(p) for p in search if Path(p).name == name and Path(p).is_file()), None)
    if found is None and not url:
        return MetadataCheck(False, skipped_because="metadata.json names no schema URL")
    if found is None and download:
        target = cache_dir() / name
        why = _download(url, target)
        if why is not None:
            return MetadataCheck(False, skipped_because=why)
        found = target
    if found is None:
        return MetadataCheck(False, skipped_because=f"no local copy of {name} was found and downloading is off")
    verify_metadata_offline(meta_file, found)
    return MetadataCheck(True, found)
