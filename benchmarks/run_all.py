"""Run every CPU benchmark of this folder, each in its own subprocess, and print one table.

    python benchmarks/run_all.py                       # all five, about 10-15 minutes on 2 CPU cores
    python benchmarks/run_all.py --only packing trl --threads 1

Each benchmark's own output is printed as it finishes; the table at the end has one row per
benchmark: what rladctl reached, the baseline, their ratio, the target and whether it is met.
The TRL comparison runs under .venv-bench/bin/python (scripts/setup-bench.sh makes it) when that
exists, else under this interpreter, where it reports TRL as unavailable. The GPU script
(gpu_perf.py) is not run here. Exit status 1 when any target is missed or a benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_PYTHON = HERE.parent / ".venv-bench" / "bin" / "python"
ORDER = ("train_step", "score_memory", "logprob_memory", "trl", "packing")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER), help="benchmarks to run")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads for the timed benchmarks (0 = torch's default)"
    )
    return parser.parse_args(argv)


def from_train_step(out: str, _summary: dict | None) -> dict:
    medians = dict(re.findall(r"^(grpo|trrd)\s+([\d.]+)", out, re.M))
    ratio = float(re.search(r"trrd/grpo: ([\d.]+) \(ratio of medians\)", out).group(1))
    return {
        "benchmark": "train step: trrd vs grpo (tiny-4m)",
        "rladctl": f"{medians['trrd']} ms (trrd)",
        "baseline": f"{medians['grpo']} ms (grpo)",
        "ratio": f"{ratio:.3f}",
        "target": "<= 1.03",
        "ok": ratio <= 1.03,
    }


def from_score_memory(out: str, _summary: dict | None) -> dict:
    extra = dict(re.findall(r"^(naive|rladctl)\s+[\d,]+ MiB\s+[\d,]+ MiB\s+([\d,]+) MiB", out, re.M))
    found = re.search(r"= ([\d.]+) \(limit ([\d.]+)\): (ok|FAIL)", out)
    return {
        "benchmark": "score-teacher memory, 4096 tok x 151,936 vocab",
        "rladctl": f"{extra['rladctl']} MiB",
        "baseline": f"{extra['naive']} MiB (naive)",
        "ratio": found.group(1),
        "target": f"<= {found.group(2)}",
        "ok": found.group(3) == "ok",
    }


def from_summary(_out: str, summary: dict | None) -> dict:
    if summary is None:
        raise ValueError("the benchmark wrote no summary")
    return summary


def commands(args: argparse.Namespace, summary: Path) -> dict[str, tuple[list[str], object]]:
    py = sys.executable
    threads = ["--threads", str(args.threads)] if args.threads else []
    trl_python = str(BENCH_PYTHON) if BENCH_PYTHON.exists() else py
    return {
        "train_step": ([py, str(HERE / "train_step.py"), "--repeats", "15", *threads], from_train_step),
        "score_memory": ([py, str(HERE / "score_memory.py")], from_score_memory),
        "logprob_memory": ([py, str(HERE / "logprob_memory.py"), "--summary", str(summary)], from_summary),
        "trl": ([trl_python, str(HERE / "trl_vs_rladctl.py"), "--summary", str(summary), *threads], from_summary),
        "packing": ([py, str(HERE / "score_packing.py"), "--summary", str(summary), *threads], from_summary),
    }


def run_one(name: str, cmd: list[str], parse, summary: Path) -> dict:
    summary.unlink(missing_ok=True)
    print(f"## {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    print("\n".join(lines), flush=True)
    print(f"({time.perf_counter() - started:.0f} s, exit {done.returncode})\n", flush=True)
    try:
        row = parse(done.stdout, json.loads(summary.read_text()) if summary.exists() else None)
    except (AttributeError, KeyError, ValueError) as exc:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"{name}: could not read its result ({exc}); stderr ends:\n{tail}\n", flush=True)
        row = {"benchmark": name, "rladctl": "error", "baseline": "", "ratio": "", "target": "", "ok": False}
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        table = commands(args, summary)
        for name in (n for n in ORDER if n in args.only):
            cmd, parse = table[name]
            rows.append(run_one(name, cmd, parse, summary))
    headers = ("benchmark", "rladctl", "baseline", "ratio", "target", "ok")
    cells = [
        [str(r.get(h, "")) if h != "ok" else {True: "ok", False: "FAIL", None: "n/a"}[r.get("ok")] for h in headers]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
    return 0 if all(r.get("ok") is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
