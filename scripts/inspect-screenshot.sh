#!/usr/bin/env bash
# Render an example `rladctl inspect --html` page and screenshot it into docs/inspect.png (headless
# Chromium, Debian's `chromium` package; no network).
#
#   bash scripts/inspect-screenshot.sh [SCORED_ARTIFACT] [OUT.png]
#
# Without an artifact it uses the first iteration's scored rollouts of a one-iteration demo run
# (runs/inspect-example, built from nothing on the first call: a few minutes on a CPU). The page is
# sorted by disagreement and the token of largest |lp - lp_T| is pinned, so its details show.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RLADCTL_VENV:-.venv}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
ARTIFACT="${1:-runs/inspect-example/rlad/iter-0000/scored}"
OUT="${2:-docs/inspect.png}"

if [ ! -x "$CHROMIUM" ]; then
    echo "error: no Chromium at $CHROMIUM. Install it (apt-get install -y chromium) or set CHROMIUM=PATH." >&2
    exit 2
fi
if [ -z "${1:-}" ] && [ ! -f "$ARTIFACT/_manifest.json" ]; then
    "$VENV/bin/rladctl" demo --out runs/inspect-example --iterations 1 >&2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/rladctl" inspect "$ARTIFACT" --html "$WORK/inspect.html" >&2
# The worst row and its token of largest |lp - lp_T|, pinned through the page's address.
PIN="$("$VENV/bin/rladctl" inspect "$ARTIFACT" --worst 1 --json | "$VENV/bin/python" -c '
import json, sys
row = json.load(sys.stdin)["rows_shown"][0]
gaps = [abs(d) for d in row["teacher_gap"]]
print(str(row["row"]) + ":" + str(gaps.index(max(gaps))))')"

"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --no-first-run --user-data-dir="$WORK/profile" --hide-scrollbars --window-size=1400,1150 \
    --virtual-time-budget=10000 --screenshot="$WORK/shot.png" \
    "file://$(realpath "$WORK/inspect.html")#sort=disagreement&desc=1&pin=$PIN" 2>/dev/null
mkdir -p "$(dirname "$OUT")"
mv "$WORK/shot.png" "$OUT"
echo "wrote $OUT (pinned row:token $PIN of $ARTIFACT)"
