#!/usr/bin/env bash
# The test command (README): sets up the environment and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_SETUP:-0}" != 1 ]; then bash scripts/setup_env.sh; fi
export TF_CPP_MIN_LOG_LEVEL=3
python -m pytest -q -n 2 --durations=15 tests "$@"
