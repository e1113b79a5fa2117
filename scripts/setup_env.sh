#!/usr/bin/env bash
# Creates .venv and installs the bundle. torch is pinned to 2.13.0 here: on the project's machines that
# version is a local CPU build; pyproject.toml keeps a range for users who bring their own (e.g. CUDA) torch.
#
#   bash scripts/setup_env.sh              the bundle alone: enough to train, evaluate and run inference
#   bash scripts/setup_env.sh --tests      also the test, export (ONNX) and deploy (MONAI Deploy App SDK with
#                                          Holoscan, ~0.5 GB) extras and MONAI Label with its server, which
#                                          the tests exercise
#   bash scripts/setup_env.sh --monailabel the bundle and MONAI Label with its server (scripts/monailabel_server.py)
#
# The deploy extra is kept out of the plain set-up: installed into the monai namespace, the SDK is imported
# (with Holoscan, ~3 s and a stack-size warning) by every `import monai`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
case "${1:-}" in
  ""|--tests|--monailabel) ;;
  *) echo "usage: bash scripts/setup_env.sh [--tests | --monailabel]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.13.0"

# MONAI Label 0.8.5 (the release on PyPI) and what its server imports, beside the pinned torch. Not through
# pip's resolver: monailabel requires monai[torchvision], which pip resolves to a CUDA torch build (GBs) in
# place of the pinned one. So monailabel --no-deps, then every requirement it declares except:
#   monai's torchvision extra (the problem above; its other extras, skimage, psutil, gdown ..., are installed)
#   monai's itk extra: the whole ITK (1.5 GB); MONAI Label's ITK writer needs only itk-io, which the bundle has
#   sam2          an optional model, which pulls torch and torchvision
#   numpymaxflow  for the radiology app's scribbles (not the monaibundle app); it pins numpy<2
#   pydicom-seg   installed --no-deps: 0.4.1, its last release, pins numpy<2 and jsonschema<4; SimpleITK,
#                 which it imports, is added. It needs a shim under pydicom 3 (scripts/monailabel_server.py).
# torchvision is left out too: PyPI's builds for torch 2.13 do not load beside the CPU torch (same script).
install_monailabel() {
  "${PIP[@]}" --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1" 2>&1 \
    | grep -v "requires .*, which is not installed" || true
  local requirements
  requirements="$(mktemp)"
  .venv/bin/python - >"$requirements" <<'PYTHON'
from importlib.metadata import requires
from packaging.requirements import Requirement

left_out = {"sam2", "numpymaxflow", "pydicom-seg"}
for line in requires("monailabel"):
    requirement = Requirement(line)
    requirement.extras.difference_update({"torchvision", "itk"})
    if requirement.name.lower() not in left_out and (requirement.marker is None or requirement.marker.evaluate()):
        print(requirement)
PYTHON
  # pip's closing report repeats the choices above as conflicts (numpymaxflow, sam2 missing; pydicom-seg's pins)
  "${PIP[@]}" "torch==2.13.0" -r "$requirements" SimpleITK 2>&1 \
    | grep -v -E "^(ERROR: pip's dependency resolver|monailabel 0\.8\.5 requires|pydicom-seg 0\.4\.1 requires)" || true
  rm -f "$requirements"
  .venv/bin/python -c "import monailabel, jwt, multipart, dicomweb_client, SimpleITK, skimage" \
    || { echo "error: the MONAI Label server's requirements did not install" >&2; exit 1; }
}

case "${1:-}" in
  "")
    "${PIP[@]}" "torch==2.13.0" -e .
    ;;
  --monailabel)
    "${PIP[@]}" "torch==2.13.0" -e .
    install_monailabel
    ;;
  --tests)
    # torch named again so that no extra's resolution can move it off 2.13.0
    "${PIP[@]}" "torch==2.13.0" -e ".[test,export,deploy]"
    install_monailabel
    ;;
esac
