#!/usr/bin/env bash
# Set everything up (.venv), then the main job: train + test on the embedded synthetic default with
# anomalib's own CLI. Prints I-AUROC, AP, P-AUROC, AUPRO and the wall time; heatmap PNGs and
# per-category tables land under results/ (paths are printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
setup_done=$(date +%s)
.venv/bin/anomalib train --config configs/experiments/imrnet_synthetic.yaml "$@"
end=$(date +%s)
echo "[demo] wall time: set-up $((setup_done - start)) s, main job (data generation on first run, training, testing, pictures) $((end - setup_done)) s"
