#!/usr/bin/env bash
# Every GPU check of rladctl in one call, for a machine lent for a few minutes (H100/H200 class):
#
#   1. gpu_perf      train step and score-teacher tokens/s, MFU, peak memory (Qwen3-0.6B and 8B shapes)
#   2. tests         pytest -m gpu: fused log-probs, bf16 autocast, sampling, scoring, train, `rladctl run`
#   3. gpu_fsdp      `rladctl train` with FSDP2 and without, Qwen3-0.6B shape, 4K-token rows
#   4. gpu_backends  rollout tokens/s of the hf backend (and vllm where it imports)
#   5. gpu_loop      two iterations of `rladctl run`, Qwen3-0.6B student / Qwen3-8B teacher shapes,
#                    8 prompts x G = 8, 1K tokens, models kept on the GPU: seconds per phase, peak memory
#   6. gpu_vllm_loop the same two iterations with vLLM engines kept through the run, colocated with
#                    train (sleep while it trains, wake to sample; student weights synced in place):
#                    seconds per phase, GPU memory awake vs asleep, engines built (skips without vllm)
#
# Run from the repository root of a machine whose python3 has torch (CUDA), transformers, typer,
# rich and pyarrow; the rest comes from .wheels gathered beforehand with scripts/gpu-wheels.sh:
#
#   bash scripts/gpu-wheels.sh                       # here, with network: fills .whl/
#   bash benchmarks/gpu_session.sh                   # there, .whl/ carried along; logs in $OUT
#   GPU_SESSION_SMOKE=1 bash benchmarks/gpu_session.sh   # any CPU: the same steps with tiny shapes
#
# Each step has its own time limit, so a slow or broken one cannot eat the next ones' time. The
# limits add up to 920 s on the GPU, more than one 15-minute loan once start-up counts: pick the
# steps one loan runs with STEPS (names as above; default all), e.g. for the loop checks of #22/#23
#
#   STEPS="tests gpu_loop gpu_vllm_loop" bash benchmarks/gpu_session.sh      # limits 600 s in all
# Logs go to $OUT (default ./gpu-session): summary.txt, install.log
# and one log per step. Record the numbers in benchmarks/README.md with the GPU's name and the date.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-session}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SMOKE="${GPU_SESSION_SMOKE:-0}"
export PYTHONUNBUFFERED=1 RLADCTL_QUIET=1

STEPS="${STEPS:-gpu_perf tests gpu_fsdp gpu_backends gpu_loop gpu_vllm_loop}"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, show its tail
  local name=$1 limit=$2 started=$SECONDS rc
  shift 2
  case " $STEPS " in
    *" $name "*) ;;
    *) echo "== $name: not in STEPS, skipped" | tee -a "$OUT/summary.txt"; return 0 ;;
  esac
  echo "== $name (limit ${limit} s): $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "   exit $rc after $((SECONDS - started)) s$([ $rc -eq 124 ] && echo ' (time limit)')" | tee -a "$OUT/summary.txt"
  tail -n 30 "$OUT/$name.log"
  return $rc
}

install() {
  if ! "$PY" -c "import reasoning_gym, math_verify" 2>/dev/null; then
    [ -d .whl ] || { echo "reasoning_gym or math_verify missing and no .whl/: run scripts/gpu-wheels.sh and carry .whl"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || return 1
    if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation .whl/pycosat-*.tar.gz; then
      # reasoning_gym imports pycosat at start-up but only its zebra puzzles call it; none runs here.
      echo "pycosat did not compile; installing a stand-in that refuses to be called"
      local site
      site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
      printf 'def _absent(*a, **k):\n    raise RuntimeError("pycosat stand-in: gpu_session.sh could not compile it")\n\nsolve = itersolve = _absent\n' >"$site/pycosat.py"
    fi
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
  "$PY" -m rladctl --version
}

{
  date -u +"%Y-%m-%d %H:%M UTC"
  git rev-parse --short HEAD 2>/dev/null || echo "(no git)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), '| transformers', transformers.__version__)"
} | tee "$OUT/summary.txt"

echo "== install" | tee -a "$OUT/summary.txt"
install >"$OUT/install.log" 2>&1 || { tail -n 30 "$OUT/install.log"; echo "install failed: see install.log" | tee -a "$OUT/summary.txt"; exit 1; }
tail -n 3 "$OUT/install.log"

if [ "$SMOKE" = 1 ]; then
  step gpu_perf 300 "$PY" benchmarks/gpu_perf.py --device cpu --presets tiny-1m --seq-lens 256 --rows 2 --steps 1 \
    --prompts 2 --group 2 --score-median 64 --score-max 128 --score-repeats 1
  step tests 600 "$PY" -m pytest -q -p no:cacheprovider tests/test_devices.py
  step gpu_fsdp 300 "$PY" benchmarks/gpu_fsdp.py --device cpu --preset tiny-1m --tokens 64 --workdir /tmp/rladctl-gpu-fsdp
  step gpu_backends 120 "$PY" benchmarks/gpu_backends.py --backends hf --device cpu --preset tiny-1m --prompts 2 \
    --group 2 --max-new-tokens 8 --repeats 1
  step gpu_loop 300 "$PY" benchmarks/gpu_loop.py --smoke --workdir /tmp/rladctl-gpu-loop-smoke
  step gpu_vllm_loop 60 "$PY" benchmarks/gpu_vllm_loop.py --smoke
else
  step gpu_perf 200 "$PY" benchmarks/gpu_perf.py
  step tests 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_devices.py
  step gpu_fsdp 60 "$PY" benchmarks/gpu_fsdp.py --parallel fsdp ddp
  step gpu_backends 60 "$PY" benchmarks/gpu_backends.py
  step gpu_loop 240 "$PY" benchmarks/gpu_loop.py
  step gpu_vllm_loop 240 "$PY" benchmarks/gpu_vllm_loop.py
fi
cat "$OUT/summary.txt"
