"""Helpers shared by the benchmark scripts (run as `python benchmarks/NAME.py`, which puts this
folder on sys.path)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

# The tiny task every CPU benchmark samples from: chain sums in a compact prompt.
TASK = [
    "task.name=chain_sum",
    "task.config={min_terms = 2, max_terms = 3, min_digits = 1, max_digits = 2}",
    'prompt.template="{metadata[expression]} ="',
    'prompt.instruction=""',
]


class Clock:
    """Seconds spent inside wrapped functions, per phase, for the iteration now running."""

    def __init__(self):
        self.now: dict[str, float] = defaultdict(float)
        self.depth = 0  # a call inside a timed call is not counted twice

    def wrap(self, owner, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            if self.depth:
                return inner(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.now[phase] += time.perf_counter() - t0
                self.depth -= 1

        setattr(owner, name, timed)


def rss_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mib(exact: bool) -> float:
    """Peak RSS since reset_peak() when it worked, else since the process started."""
    return rss_mib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_in_child(script: str, path: str, args: argparse.Namespace, save: Path) -> dict:
    """Run ``script --path PATH`` in a fresh process (its own peak memory) and read its JSON line."""
    cmd = [
        sys.executable,
        script,
        "--path",
        path,
        "--save",
        str(save),
        "--tokens",
        str(args.tokens),
        "--vocab",
        str(args.vocab),
        "--hidden",
        str(args.hidden),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RLADCTL_QUIET="1"))
    if done.returncode != 0:
        sys.exit(f"{path} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_table(rows: dict[str, dict], setup: str) -> float:
    """Print the per-path RSS table of a child-measured benchmark; returns rladctl extra / naive extra.

    ``setup`` names what a lifetime peak may include when the peak could not be reset.
    """
    print(f"{'path':<10}{'RSS before':>14}{'peak RSS':>14}{'extra':>14}{'seconds':>10}")
    for name, r in rows.items():
        print(
            f"{name:<10}{r['before_mib']:>10,.0f} MiB{r['peak_mib']:>10,.0f} MiB{r['extra_mib']:>10,.0f} MiB{r['seconds']:>10.2f}"
        )
    if not all(r["peak_reset"] for r in rows.values()):
        print(f"note: /proc/self/clear_refs not writable; peaks are lifetime ru_maxrss and may include {setup}")
    return rows["rladctl"]["extra_mib"] / rows["naive"]["extra_mib"]
