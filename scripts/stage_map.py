#!/usr/bin/env python3
"""Stage the deploy app for ``monai-deploy package`` (a MONAI Application Package for GPU servers).

``monai-deploy package <app folder>`` copies one folder into the image (``/opt/holoscan/app``)
and runs it with ``python3 <folder>``; it pip-installs that folder's ``requirements.txt``
and copies ``--models`` to ``/opt/holoscan/models``. This script makes such a folder::

    <output>/app/__main__.py        runs bundle.deploy (python -m bundle.deploy)
    <output>/app/bundle/            this package (the app imports the bundle's own code)
    <output>/app/configs/           inference.json + metadata.json (what the app parses)
    <output>/app/app.yaml           bundle/deploy/map/app.yaml, version from metadata.json
    <output>/app/requirements.txt   pyproject.toml's dependencies + the deploy extra (no holoscan-cli)
    <output>/models/<name>/model.pt the checkpoint (--model), with its model.thresholds.json when it has one

then prints the ``monai-deploy package`` command. Usage::

    python scripts/stage_map.py --model models/model.pt --output build/map
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = '''"""MAP entry point: python3 /opt/holoscan/app (paths from HOLOSCAN_INPUT_PATH / OUTPUT_PATH / MODEL_PATH)."""
import sys

from bundle.deploy.__main__ import main

sys.exit(main())
'''


def requirements() -> list[str]:
    """The project's dependencies and deploy extra; torch stays a range (the image's pip picks a CUDA build)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    packager_only = re.compile(r"^holoscan-cli\b")
    return [r for r in project["dependencies"] + project["optional-dependencies"]["deploy"] if not packager_only.match(r)]


def stage(model: Path, output: Path, name: str = "cxr-distill") -> Path:
    """Write the application folder and the models folder under ``output``; returns ``output``."""
    model = model.resolve()
    checkpoint = model / "models" / "model.pt" if model.is_dir() else model
    if not checkpoint.is_file():
        raise SystemExit(f"error: {checkpoint}: no checkpoint (pass a bundle folder or a model.pt)")
    configs = model / "configs" if (model / "configs" / "inference.json").is_file() else ROOT / "configs"
    app = output / "app"
    if output.exists():
        shutil.rmtree(output)
    (app / "configs").mkdir(parents=True)
    shutil.copytree(ROOT / "bundle", app / "bundle", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for config in ("inference.json", "metadata.json"):
        shutil.copy(configs / config, app / "configs" / config)
    version = json.loads((app / "configs" / "metadata.json").read_text())["version"]
    app_yaml = (ROOT / "bundle" / "deploy" / "map" / "app.yaml").read_text()
    (app / "app.yaml").write_text(re.sub(r"(?m)^(\s*version:).*$", rf"\g<1> {version}", app_yaml, count=1))
    (app / "requirements.txt").write_text("\n".join(requirements()) + "\n")
    (app / "__main__.py").write_text(MAIN)
    (output / "models" / name).mkdir(parents=True)
    shutil.copy(checkpoint, output / "models" / name / "model.pt")
    thresholds = checkpoint.with_name(f"{checkpoint.stem}.thresholds.json")  # bundle.thresholds.thresholds_path
    if thresholds.is_file():  # its per-finding decision thresholds travel with it
        shutil.copy(thresholds, output / "models" / name / "model.thresholds.json")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "model.pt",
                        help="bundle folder (configs/ + models/model.pt) or model.pt (default: models/model.pt)")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "map", help="staging folder")
    parser.add_argument("--tag", default=None, help="image name:tag for the printed command")
    args = parser.parse_args(argv)
    output = stage(args.model, args.output)
    version = json.loads((output / "app" / "configs" / "metadata.json").read_text())["version"]
    tag = args.tag or f"cxr-distill:{version}"
    print(f"staged {output}/app and {output}/models; package it (Docker and network access needed) with:\n"
          f"  monai-deploy package {output}/app -c {output}/app/app.yaml -m {output}/models "
          f"-t {tag} --platform x86_64 -l DEBUG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
