#!/usr/bin/env bash
# ruff, lint and format, as CI runs it (ruff is pinned in the `test` extra: format output changes
# between ruff versions). `bash scripts/lint.sh --fix` applies both instead of checking.
set -euo pipefail
cd "$(dirname "$0")/.."
RUFF="${RLADCTL_VENV:-.venv}/bin/ruff"
if [ "${1:-}" = "--fix" ]; then
  "$RUFF" check --fix .
  "$RUFF" format .
else
  "$RUFF" check .
  "$RUFF" format --check .
fi
