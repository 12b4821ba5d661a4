#!/usr/bin/env bash
# The GPU path, measured in one run of under 8 minutes on one GPU, printed as one table
# (benchmarks/gpu.py): point ops on CUDA against the CPU path and against torch-cluster (parity and
# speed), the greedy coreset, the renderer, PointAD seconds per sample with a ViT-L/14@336-sized
# random backbone, and BTF / IMRNet fitted and tested at 100k points per cloud.
#
#   bash benchmarks/gpu.sh                      # on a machine with a GPU
#   bash benchmarks/gpu.sh --device cpu --dry-run   # every stage at a tiny size: a CPU check of the logic
#
# Options: --device cuda|cpu, --dry-run, --wheels DIR (offline wheelhouse, default ./.whl),
# --out DIR (where gpu.jsonl goes, default $OUT or .), --no-build (never compile torch-cluster).
# Time caps (seconds, environment): GPU_CHECK_CAP=450 for the whole run, TORCH_CLUSTER_BUILD_CAP=180
# for compiling torch-cluster, GPU_STAGE_CAP=150 for each child stage (PointAD, BTF, IMRNet).
#
# Set-up, all offline and each only when missing:
#   * the package: the source tree goes on PYTHONPATH when `import anomalib_3d` fails;
#   * wheels from the wheelhouse (--wheels): whatever it holds is installed with `pip --no-index`
#     (e.g. fpsample / pykdtree for the CPU columns, anomalib + open_clip_torch for the PointAD and
#     model stages; prepare it where a registry is reachable:
#     `pip download -d .whl --python-version 3.12 --only-binary :all: fpsample pykdtree anomalib open_clip_torch`
#     plus `pip download -d .whl --no-deps --no-binary :all: torch-cluster` for the source build);
#   * torch-cluster: a wheel from the wheelhouse if one matches, else compiled from its source archive
#     there for this GPU's architecture only, under TORCH_CLUSTER_BUILD_CAP; past the cap (or with no
#     archive) the torch-cluster rows are left out and the run goes on.
# A stage whose modules are still missing (Open3D for BTF / IMRNet: its wheel is far larger than a
# carried wheelhouse) prints a row saying so.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
DEVICE=cuda
DRY=()
WHEELS=${GPU_WHEELS:-./.whl}
OUT_DIR=${OUT:-.}
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --dry-run) DRY=(--dry-run); shift ;;
        --wheels) WHEELS=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
TOTAL_CAP=${GPU_CHECK_CAP:-450}
BUILD_CAP=${TORCH_CLUSTER_BUILD_CAP:-180}
STAGE_CAP=${GPU_STAGE_CAP:-150}
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=$(command -v python3 || command -v python); fi

echo "== environment ($(elapsed) s)"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())" || exit 1
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no GPU visible to torch: run with --device cpu --dry-run for a CPU check" >&2
    exit 1
fi
if ! "$PY" -c "import anomalib_3d" 2>/dev/null; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    echo "anomalib_3d not installed: using the source tree ($PWD)"
fi

echo "== wheels ($(elapsed) s)"
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    # Everything the wheelhouse holds, offline; what is already installed is left alone.
    timeout 120 "$PY" -m pip install --no-index --find-links "$WHEELS" --no-warn-script-location -q "$WHEELS"/*.whl \
        || echo "some wheels did not install (their stages will say what is missing)"
else
    echo "no wheelhouse at $WHEELS: stages needing missing modules will be skipped"
fi

echo "== torch-cluster ($(elapsed) s)"
if "$PY" -c "import torch_cluster" 2>/dev/null; then
    echo "installed"
elif [ ${#DRY[@]} -gt 0 ] || [ "$BUILD" = 0 ] || [ "$DEVICE" != cuda ]; then
    echo "missing; not built (dry run, --no-build or no GPU): its rows are left out"
else
    ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    if ! timeout 60 "$PY" -m pip install --no-index --find-links "$WHEELS" --only-binary :all: -q torch-cluster 2>/dev/null; then
        echo "no matching wheel: compiling for sm_${ARCH/./} (cap ${BUILD_CAP} s)"
        TORCH_CUDA_ARCH_LIST=$ARCH FORCE_CUDA=1 MAX_JOBS=$(nproc) timeout "$BUILD_CAP" \
            "$PY" -m pip install --no-index --find-links "$WHEELS" --no-build-isolation --no-binary :all: -q torch-cluster \
            || echo "torch-cluster build failed or passed its cap (no source archive in $WHEELS?): its rows are left out"
    fi
fi

LEFT=$(( TOTAL_CAP - $(elapsed) ))
echo "== benchmarks/gpu.py ($(elapsed) s elapsed, ${LEFT} s left)"
mkdir -p "$OUT_DIR"
timeout "$LEFT" "$PY" benchmarks/gpu.py --device "$DEVICE" "${DRY[@]}" --stage-timeout "$STAGE_CAP" \
    --json "$OUT_DIR/gpu.jsonl"
STATUS=$?
[ $STATUS = 124 ] && echo "benchmarks/gpu.py passed the ${TOTAL_CAP} s cap: the rows above are those that finished"
echo "== done in $(elapsed) s"
exit $STATUS
