#!/usr/bin/env bash
# The README's test command: set up the environment from nothing, then run the test suite.
# Slow suites (marked `slow`) run only with RLADCTL_SLOW=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${RLADCTL_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest "$@"
