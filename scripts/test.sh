#!/usr/bin/env bash
# Set everything up, then run the whole test suite (slow end-to-end runs included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ${PYTHON:-python3} -m pytest -q -p no:cacheprovider tests "$@"
