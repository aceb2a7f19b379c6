#!/usr/bin/env bash
# The test command (README): sets up the environment and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_SETUP:-0}" != 1 ]; then bash scripts/setup_env.sh; fi
export TF_CPP_MIN_LOG_LEVEL=3
# One pytest worker more than there are cores: many tests wait (for their
# training subprocesses, heartbeats, checkpoint threads) and a third worker
# fills those gaps (2 cores, session 32: 704 s with 2 workers, 677 s with 3).
WORKERS=${PYTEST_WORKERS:-$(( $(nproc) + 1 ))}
# The whole tests/ folder, unless a test file or folder is named
# (tests/test_agc.py, tests/test_agc.py::test_name): then only that.
TARGETS=tests
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then TARGETS=; fi
done
python -m pytest -q -n "$WORKERS" --durations=15 $TARGETS "$@"
