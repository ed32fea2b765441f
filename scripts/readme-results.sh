#!/usr/bin/env bash
# The README's demo numbers: the README's main command from a clean clone of this checkout's HEAD
# (`bash scripts/demo.sh --seed S`: a new virtual environment, models built from nothing), for each
# seed and thread count, timed whole (set-up included), then the table the README shows, with the
# machine it ran on. A finished run's result (OUT/seedS-threadsT.json) is kept: re-running prints
# the table again, a killed sweep resumes.
#
#   bash scripts/readme-results.sh                      # seeds 0 1 2 x OMP_NUM_THREADS 1 2
#   SEEDS="0" THREADS="2" OUT=runs/readme bash scripts/readme-results.sh
#   FRESH=0 bash scripts/readme-results.sh              # in this checkout's .venv, no clone, no set-up
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RLADCTL_VENV:-.venv}"
OUT="$(realpath -m "${OUT:-runs/readme-results}")"
export FRESH="${FRESH:-1}"
SEEDS="${SEEDS:-0 1 2}"
THREADS="${THREADS:-1 2}"
mkdir -p "$OUT"
for seed in $SEEDS; do
  for threads in $THREADS; do
    result="$OUT/seed$seed-threads$threads.json"
    [ -s "$result" ] && continue
    run="$OUT/seed$seed-threads$threads"
    rm -rf "$run"
    start=$(date +%s.%N)
    if [ "$FRESH" = 1 ]; then
      git clone -q . "$run/clone"
      (cd "$run/clone" && OMP_NUM_THREADS=$threads RLADCTL_QUIET=1 bash scripts/demo.sh --out "$run/demo" --seed "$seed" --json) > "$run.partial"
    else
      OMP_NUM_THREADS=$threads RLADCTL_QUIET=1 "$VENV/bin/rladctl" demo --out "$run" --seed "$seed" --json > "$run.partial"
    fi
    end=$(date +%s.%N)
    "$VENV/bin/python" - "$run.partial" "$result" "$threads" "$start" "$end" <<'PY'
import json, sys
partial, result, threads, start, end = sys.argv[1:]
summary = json.load(open(partial))
summary.update(threads=int(threads), wall_seconds=float(end) - float(start))
json.dump(summary, open(result + ".tmp", "w"), indent=2)
PY
    mv "$result.tmp" "$result" && rm -f "$run.partial"
    rm -rf "$run"  # models and runs of a finished measurement: the JSON holds its numbers
  done
done
"$VENV/bin/python" - "$OUT" $SEEDS -- $THREADS <<'PY'
import json, os, platform, sys
out, rest = sys.argv[1], sys.argv[2:]
seeds, threads = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
how = "`bash scripts/demo.sh --seed S` in a clean clone (set-up included in the wall time)" if os.environ.get("FRESH", "1") == "1" else "`rladctl demo --seed S`"
print(f"Machine: {cpu}, {os.cpu_count()} cores; {how} with OMP_NUM_THREADS=T, models built from nothing.")
print()
print("| seed | threads | before Mean@8 | after RLAD | after GRPO | RLAD gain | GRPO gain | teacher | wall |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for s in seeds:
    for t in threads:
        r = json.load(open(f"{out}/seed{s}-threads{t}.json"))
        b, a, g = r["before"]["Mean@8"], r["after"]["RLAD"]["Mean@8"], r["after"]["GRPO"]["Mean@8"]
        m, sec = divmod(round(r["wall_seconds"]), 60)
        print(f"| {s} | {t} | {b:.3f} | {a:.3f} | {g:.3f} | {a - b:+.3f} | {g - b:+.3f} | {r['teacher']['Mean@8']:.3f} | {m} min {sec:02d} s |")
PY
