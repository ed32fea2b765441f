#!/usr/bin/env bash
# Create (or reuse) a separate virtual environment for benchmarks/trl_vs_rladctl.py: TRL + rladctl.
# TRL is a baseline to compare against, never a dependency of rladctl, so it lives apart from .venv.
# Order matters:
#   1. the CPU torch first (pinned), so TRL's torch requirement resolves to it and not to a
#      multi-GB CUDA build;
#   2. trl (pulls accelerate, datasets; transformers is constrained to the one already resolved);
#   3. rladctl itself, editable, with a constraint that keeps the torch and transformers above.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RLADCTL_BENCH_VENV:-.venv-bench}"
TORCH="${RLADCTL_TORCH:-2.13.0}"
TRL="${RLADCTL_TRL:-}"  # empty = the newest release pip resolves
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if "$PY" -c "import trl, rladctl" 2>/dev/null; then
  exit 0  # already set up
fi
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==$TORCH"
"$PY" -m pip install -q "trl${TRL:+==$TRL}"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" -m pip freeze | grep -iE '^(torch|transformers|tokenizers)==' > "$constraints"
"$PY" -m pip install -q -c "$constraints" -e .
"$PY" -c "import torch, transformers, trl, rladctl; print(f'trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__} ready in $VENV')"
