"""The README's version strings are the bundle's version (configs/metadata.json), as are the package's."""

from __future__ import annotations

import json
import re
import tomllib

import bundle
from conftest import REPO_ROOT

# the places a version of this bundle is written: the Model Zoo zip, MAP image tags, "cxr-distill vX.Y.Z"
BUNDLE_VERSION = re.compile(r"cxr_distill_\w+?_v(\d+\.\d+\.\d+)|cxr-distill[\w-]*:(\d+\.\d+\.\d+)|"
                            r"cxr-distill v(\d+\.\d+\.\d+)")


def _version() -> str:
    return json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["version"]


def test_readme_version_strings_match_the_metadata():
    readme = (REPO_ROOT / "README.md").read_text()
    found = {next(v for v in match.groups() if v) for match in BUNDLE_VERSION.finditer(readme)}
    assert found, "the README names the export's zip file"
    assert found == {_version()}, f"README versions {sorted(found)} != configs/metadata.json {_version()}"


def test_package_and_model_card_versions_match_the_metadata():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == bundle.__version__ == _version()
    card = (REPO_ROOT / "docs" / "model_card.md").read_text()
    assert {next(v for v in m.groups() if v) for m in BUNDLE_VERSION.finditer(card)} <= {_version()}
