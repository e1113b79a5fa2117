"""The files of a released bundle: hashes, ``large_files.yml`` and the reproducible zip."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["file_sha256", "large_files_yaml", "write_zip"]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_files_yaml(bundle_dir: str | os.PathLike, files: Sequence[str], url_base: str | None = None) -> str:
    """Model Zoo ``large_files.yml``: ``{path, url, hash_val, hash_type}`` per model file.

    ``url_base`` is where the files will be hosted (``<url_base>/<path>``); without it the URLs are the
    ``file://`` addresses of the files just exported, so ``python -m monai.bundle download_large_files``
    works on this machine, and the sha256 hashes guard any other copy.
    """
    root = Path(bundle_dir).resolve()
    lines = ["large_files:"]
    for relative in files:
        path = root / relative
        url = f"{url_base.rstrip('/')}/{relative}" if url_base else path.as_uri()
        lines += [f'  - path: "{relative}"', f'    url: "{url}"', f'    hash_val: "{file_sha256(path)}"',
                  '    hash_type: "sha256"']
    return "\n".join(lines) + "\n"


def write_zip(bundle_dir: str | os.PathLike, zip_path: str | os.PathLike) -> Path:
    """``<name>_v<version>.zip`` holding ``<name>/...``, entries sorted and dated 1980: same files, same bytes."""
    root = Path(bundle_dir)
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = zip_path.with_suffix(".zip.partial")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{root.name}/{path.relative_to(root).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    os.replace(temporary, zip_path)
    return zip_path
