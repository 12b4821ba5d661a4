#!/usr/bin/env bash
# Set everything up, then the main job: train + test IMRNet on the embedded synthetic default
# with anomalib's own CLI. Prints I-AUROC, AP, P-AUROC, AUPRO; heatmap PNGs and per-category
# tables land in results/IMRNet/Synthetic3D/... (paths are printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec anomalib train --config configs/experiments/imrnet_synthetic.yaml "$@"
