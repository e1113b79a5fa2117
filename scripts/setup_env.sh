#!/usr/bin/env bash
# Creates .venv and installs the bundle. torch is pinned to 2.13.0 here: on the project's machines that
# version is a local CPU build; pyproject.toml keeps a range for users who bring their own (e.g. CUDA) torch.
#
#   bash scripts/setup_env.sh          the bundle alone: enough to train, evaluate and run inference
#   bash scripts/setup_env.sh --tests  also the test, export (ONNX) and deploy (MONAI Deploy App SDK with
#                                      Holoscan, ~0.5 GB) extras and MONAI Label, which the tests exercise
#
# The deploy extra is kept out of the plain set-up: installed into the monai namespace, the SDK is imported
# (with Holoscan, ~3 s and a stack-size warning) by every `import monai`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ "${1:-}" != "--tests" ]; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0" -e .
  exit 0
fi
# torch named again so that no extra's resolution can move it off 2.13.0
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[test,export,deploy]"
# MONAI Label, for tests/test_monailabel.py (its own BundleInferTask on the exported bundle). --no-deps:
# monailabel requires monai[torchvision], which pip resolves to a CUDA torch build in place of the pinned
# one; the packages below are what its bundle inference task imports (see README, "Use in MONAI Label").
.venv/bin/python -m pip install --quiet --no-deps "monailabel==0.8.5" 2>&1 | grep -v "requires .*, which is not installed" || true
.venv/bin/python -m pip install --quiet "torch==2.13.0" expiring_dict pydantic-settings pynrrd shapely scikit-image
