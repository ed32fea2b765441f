#!/usr/bin/env bash
# The README's main command: set up the environment from nothing, then run the tiny CPU demo of
# the whole pipeline (models are built locally; nothing is downloaded). Extra arguments go to
# `rladctl demo` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
VENV="${RLADCTL_VENV:-.venv}"
exec "$VENV/bin/rladctl" demo "$@"
