"""Fingerprint what rladctl writes, to show that a refactor changed no behaviour.

Builds a small teacher/student pair, runs every stage command alone (with ``--json``) and a
20-iteration ``rladctl run recipes/demo.toml``, all with fixed seeds on one thread, then records the
sha256 of every Parquet part, every ``model.safetensors`` and every ``report.json``, and each
command's ``--json`` output with its timing fields removed.

    python scripts/behaviour_hashes.py --out /tmp/before.json          # record
    python scripts/behaviour_hashes.py --check /tmp/before.json        # compare; exit 1 on a change

Takes about two minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "demo.toml"
HASHED = ("*.parquet", "model.safetensors", "report.json")
# Values that measure the machine, not the result.
VOLATILE = {"seconds", "tokens_per_s", "report", "out", "run_dir", "final_student"}


def rladctl(work: Path, *args: str) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RLADCTL_QUIET": "1"}
    done = subprocess.run([sys.executable, "-m", "rladctl", *args], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"rladctl {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def scrub(value):
    """A --json output without the keys that measure time or name temporary paths."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(work: Path) -> dict:
    r = str(RECIPE)
    outputs = {}
    rladctl(work, "init-model", "teacher", "--preset", "tiny-4m", "--recipe", r, "--seed", "1")
    rladctl(work, "warmup", "teacher", "--recipe", r, "--steps", "40", "--seed", "1")
    rladctl(work, "init-model", "student", "--shrink-from", "teacher", "--keep-layers", "0,3")
    rladctl(work, "warmup", "student", "--recipe", r, "--steps", "10")
    stages = {
        "rollout": ["rollout", "-r", r, "--model", "student", "-n", "8", "-G", "4", "--out", "x/rollouts"],
        "score-teacher": ["score-teacher", "--teacher", "teacher", "--input", "x/rollouts", "--out", "x/scored"],
        "train": ["train", "-r", r, "--model", "student", "--input", "x/scored", "--out", "x/ckpt"],
        "eval": [
            "eval",
            "-r",
            r,
            "--model",
            "student",
            "--model",
            "x/ckpt",
            "--pass-at",
            "4",
            "--set",
            "eval.num_prompts=16",
            "--out",
            "x/eval",
        ],
        "run": [
            "run",
            r,
            "--set",
            "run.dir=loop",
            "--set",
            "run.student=student",
            "--set",
            "run.teacher=teacher",
            "--set",
            "run.iterations=20",
        ],
    }
    for name, args in stages.items():
        outputs[name] = scrub(json.loads(rladctl(work, *args, "--json")))
    files = {}
    for pattern in HASHED:
        for path in sorted(work.rglob(pattern)):
            files[str(path.relative_to(work))] = sha256(path)
    return {"files": files, "json": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the fingerprints here")
    group.add_argument("--check", type=Path, help="compare with fingerprints written earlier")
    parser.add_argument("--keep", type=Path, help="work in this directory (kept) instead of a temporary one")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = record(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="rladctl-behaviour-") as tmp:
            result = record(Path(tmp))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"{len(result['files'])} files and {len(result['json'])} --json outputs recorded in {args.out}")
        return
    before = json.loads(args.check.read_text())
    changed = [
        k
        for k in sorted(set(before["files"]) | set(result["files"]))
        if before["files"].get(k) != result["files"].get(k)
    ]
    changed += [f"--json of {k}" for k in sorted(before["json"]) if before["json"].get(k) != result["json"].get(k)]
    for item in changed:
        print(f"changed: {item}")
    print(
        f"{len(result['files'])} files, {len(result['json'])} --json outputs: {'identical' if not changed else f'{len(changed)} changed'}"
    )
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
