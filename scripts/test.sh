#!/usr/bin/env bash
# The test command (CI runs exactly this through .ci/run):
#   1. a brand-new virtual environment (.venv-test, deleted first) set up by scripts/setup.sh,
#      torch-cluster included so the backend-parity tests run;
#   2. the wheel built and installed *non-editable* into a second brand-new environment, where
#      anomalib's own CLI must resolve the plugins (scripts/check_wheel.sh);
#   3. the whole test suite, slow end-to-end runs included.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
VENV=.venv-test bash scripts/setup.sh --fresh --torch-cluster
setup_done=$(date +%s)
bash scripts/check_wheel.sh
wheel_done=$(date +%s)
set +e
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv-test/bin/python -m pytest -q -p no:cacheprovider --durations=30 tests "$@"
status=$?
set -e
end=$(date +%s)
echo "[test] wall time: set-up $((setup_done - start)) s, wheel check $((wheel_done - setup_done)) s, tests $((end - wheel_done)) s, total $((end - start)) s"
exit $status
