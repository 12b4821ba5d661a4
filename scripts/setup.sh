#!/usr/bin/env bash
# Set up anomalib-3d in a virtual environment, from nothing (idempotent; seconds when it is all there).
#
#   bash scripts/setup.sh [--venv DIR] [--fresh] [--torch-cluster]
#
#   --venv DIR        the virtual environment to use or create (default: .venv, or $VENV)
#   --fresh           delete DIR first, so nothing installed earlier can hide a missing step
#   --torch-cluster   also compile torch-cluster (optional GPU backend; the test command uses it so
#                     the backend-parity tests run; ~15 min on 2 cores the first time, then
#                     seconds from pip's wheel cache)
#
# Steps: Debian libusb-1.0-0 (open3d 0.20 needs it), xvfb + libgl1-mesa-dri (Open3D's windows on a
# machine without a screen: the PointAD parity test against Open3D) -> venv -> torch + torchvision ->
# anomalib-3d editable with its dev extras (ordinary isolated builds: fpsample arrives as a source
# distribution whose build backend pip fetches itself) -> optionally torch-cluster, the only
# package built with --no-build-isolation because it compiles against the installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
FRESH=0
TORCH_CLUSTER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --torch-cluster) TORCH_CLUSTER=1; shift ;;
    *) echo "[setup] unknown option $1 (see the header of scripts/setup.sh)" >&2; exit 2 ;;
  esac
done
BASE_PY=${PYTHON:-python3}
start=$(date +%s)

apt_packages=(libusb-1.0-0 xvfb libgl1-mesa-dri)
[ "$TORCH_CLUSTER" = 1 ] && apt_packages+=(ninja-build)
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ "$FRESH" = 1 ] && [ -e "$VENV" ]; then
  echo "[setup] removing $VENV (fresh environment)"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools>=70" wheel

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] pip install torch torchvision"
  "${PIP[@]}" install -q torch torchvision
fi

echo "[setup] pip install -e .[dev]"
"${PIP[@]}" install -q -e ".[dev]"

if [ "$TORCH_CLUSTER" = 1 ] && ! "$PY" -c "import torch_cluster" >/dev/null 2>&1; then
  echo "[setup] pip install torch-cluster (compiles against the installed torch; pip caches the wheel)"
  "${PIP[@]}" install -q ninja
  PATH="$VENV/bin:$PATH" MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install -q --no-build-isolation torch-cluster
fi

"$PY" -c "import anomalib, anomalib_3d, open3d, torch; print('[setup] ok: anomalib', anomalib.__version__, '| torch', torch.__version__, '| ops backends', anomalib_3d.info()['ops_backends'])"
echo "[setup] environment $VENV ready in $(( $(date +%s) - start )) s (activate: source $VENV/bin/activate)"
