#!/usr/bin/env bash
# Create (or reuse) the project virtual environment and install rladctl with its test extras
# (`--runtime`: rladctl alone, what the demo needs; scripts/demo.sh uses it).
# torch is pinned to the CPU build here only: with no torch present, pip would otherwise resolve a
# multi-GB CUDA build. The package itself keeps an open torch range for GPU users.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RLADCTL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==${RLADCTL_TORCH:-2.13.0}"
if [ "${1:-}" = "--runtime" ]; then
  "$VENV/bin/python" -m pip install -q -e .
else
  "$VENV/bin/python" -m pip install -q -e ".[test]"
fi
