#!/usr/bin/env bash
# Set up a fresh machine for anomalib-3d (idempotent; seconds when everything is there).
#   - Debian: libusb-1.0-0 (open3d 0.20 needs it), ninja-build (torch-cluster build), xvfb (render benchmark)
#   - Python: torch + torchvision, torch-cluster compiled against that torch, then anomalib-3d (editable) + dev extras
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in libusb-1.0-0 ninja-build xvfb; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# --no-build-isolation below builds with what is installed: make sure the build tools are recent.
$PY -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 70)" >/dev/null 2>&1 \
  || $PY -m pip install -q "setuptools>=70" wheel

if ! $PY -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] pip install torch torchvision"
  $PY -m pip install -q torch torchvision
fi

if ! $PY -c "import torch_cluster" >/dev/null 2>&1; then
  # torch-cluster ships as source only: it must compile against the torch installed above
  # (~15 min on 2 cores the first time; pip caches the wheel, later installs take seconds).
  echo "[setup] pip install torch-cluster (compiles against the installed torch)"
  MAX_JOBS=${MAX_JOBS:-2} $PY -m pip install -q --no-build-isolation torch-cluster
fi

echo "[setup] pip install -e .[dev]"
$PY -m pip install -q --no-build-isolation -e ".[dev]"
$PY -c "import open3d, torch_cluster, anomalib, anomalib_3d; print('[setup] ok: anomalib', anomalib.__version__, '| torch', __import__('torch').__version__)"
