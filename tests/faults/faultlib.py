"""What the fault tests share: running a stage under a fault, and comparing what it leaves behind.

Each stage runs in a fresh process through ``inject.py``, with its outputs under one work directory
``W``; only file-system events under ``W`` count, so an event number names the same instant in
every run of the same command. ``snapshot(W)`` reads everything there into comparable values:
Parquet and report files byte for byte, tensors by value, manifests and metrics without the fields
that are timings or name the directory.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import forkserver

INJECT = Path(__file__).with_name("inject.py")
WRITE_EVENTS = {
    "open",
    "write_table",
    "torch.save",
    "save_file",
    "fsync",
    "mkdir",
    "replace",
    "rename",
    "write_text",
    "write_bytes",
}
# Fields that differ between two equal runs: wall-clock readings, what the last invocation itself
# did (a resumed run writes fewer parts), and the checksum of an upstream
# manifest (which holds its own creation time).
VOLATILE = {"timings", "created_unix", "seconds", "tokens_per_s", "manifest_sha256"}


# What the suite did, for the terminal summary (tests/conftest.py prints it).
STATS: Counter = Counter()


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stderr: str
    events: list[tuple[int, str, str]]  # (number, name, path) of the events this run saw

    @property
    def killed(self) -> bool:
        return self.returncode == -9


def run_faulted(
    args: list[str],
    work: Path,
    fault: str = "count",
    timeout: float = 600,
    root: Path | None = None,
    fresh: bool = False,
) -> Outcome:
    """``rladctl ARGS`` with ``fault`` injected (see inject.py); events under ``root`` (default ``work``) count.

    The process is forked from tests/forkserver.py's server; ``fresh`` starts a new interpreter.
    """
    import tempfile

    work.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".events")  # not under work: it may be a full or read-only disk
    os.close(fd)
    log = Path(name)
    env = dict(
        os.environ,
        RLADCTL_QUIET="1",
        RLADCTL_FAULT=fault,
        RLADCTL_FAULT_LOG=str(log),
        RLADCTL_FAULT_ROOT=str(root or work),
        RLADCTL_FAULT_PARITY_REWARD="1",
        OMP_NUM_THREADS="1",
    )
    env.pop("RLADCTL_DEBUG", None)
    done = forkserver.run([str(INJECT), *args], env=env, timeout=timeout, fresh=fresh)
    events = []
    for line in log.read_text().splitlines() if log.exists() else []:
        number, name, path = line.split("\t", 2)
        events.append((int(number), name, path))
    log.unlink(missing_ok=True)
    return Outcome(done.returncode, done.stderr, events)


# --------------------------------------------------------------------------------------------
# what a directory holds


def _normalise(obj, work: str):
    if isinstance(obj, dict):
        return {k: _normalise(v, work) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_normalise(v, work) for v in obj]
    if isinstance(obj, str):
        return obj.replace(work, "<W>")
    return obj


def _read(path: Path, work: str):
    if path.name.endswith(".json"):
        return _normalise(json.loads(path.read_text()), work)
    if path.name.endswith(".jsonl"):
        return [_normalise(json.loads(line), work) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {k: v.numpy().tobytes() for k, v in load_file(path).items()}
    if path.suffix == ".pt":
        import torch

        return _tensors_as_bytes(torch.load(path, map_location="cpu", weights_only=True))
    if path.suffix == ".md":
        return _without_seconds_column(path.read_text().replace(work, "<W>"))
    if path.suffix == ".csv":  # the run's iterations.csv: every column but the wall-clock ones
        import csv

        return [_normalise(row, work) for row in csv.DictReader(path.read_text().splitlines())]
    if path.suffix in (".txt", ".toml"):
        return path.read_text().replace(work, "<W>")
    return path.read_bytes()


def _without_seconds_column(markdown: str) -> str:
    """A run report's per-iteration table ends in wall-clock seconds: drop that column."""
    out, timed = [], False
    for line in markdown.splitlines():
        cells = line.rstrip().rstrip("|").split("|")
        if line.startswith("|") and cells[-1].strip() == "seconds":
            timed = True
        if not line.startswith("|"):
            timed = False
        out.append("|".join(cells[:-1]) if timed else line)
    return "\n".join(out)


def _tensors_as_bytes(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return (str(obj.dtype), tuple(obj.shape), obj.numpy().tobytes())
    if isinstance(obj, dict):
        return {k: _tensors_as_bytes(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tensors_as_bytes(v) for v in obj]
    return obj


def snapshot(work: Path) -> dict[str, object]:
    """Every file under ``work`` by relative path, read for comparison (see the module docstring)."""
    work = Path(work)
    return {str(p.relative_to(work)): _read(p, str(work)) for p in sorted(work.rglob("*")) if p.is_file()}


def differences(got: dict, want: dict) -> list[str]:
    out = [f"missing {k}" for k in sorted(want.keys() - got.keys())] + [
        f"extra {k}" for k in sorted(got.keys() - want.keys())
    ]
    return out + [f"differs {k}" for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]


def rows_of(work: Path) -> set[tuple[str, int, int]]:
    """(artifact, prompt_id, sample_idx) of every row in every complete artifact under ``work``."""
    import pyarrow.parquet as pq

    rows = set()
    for manifest in Path(work).rglob("*manifest.json"):
        meta = json.loads(manifest.read_text())
        for part in meta.get("parts", []):
            table = pq.read_table(manifest.parent / part["file"], columns=["prompt_id", "sample_idx"])
            where = str(manifest.parent.relative_to(work))
            rows |= {
                (where, str(p), int(s)) for p, s in zip(table["prompt_id"].to_pylist(), table["sample_idx"].to_pylist())
            }
    return rows


def complete_things_are_intact(work: Path) -> list[str]:
    """Every directory with a manifest must hold exactly what the manifest promises."""
    from rladctl.store.files import sha256_file

    problems = []
    for manifest in Path(work).rglob("*manifest.json"):
        try:
            meta = json.loads(manifest.read_text())
        except ValueError:
            problems.append(f"unreadable {manifest}")
            continue
        for part in meta.get("parts", []):
            file = manifest.parent / part["file"]
            if not file.exists() or sha256_file(file) != part["sha256"]:
                problems.append(f"{file} does not match its manifest")
        weights = manifest.parent / "model.safetensors"
        if "parts" not in meta and (manifest.parent / "config.json").exists():
            try:
                from safetensors.torch import load_file

                load_file(weights)
            except Exception as exc:  # noqa: BLE001 (any failure to load is the finding)
                problems.append(f"{weights} does not load: {exc}")
    return problems


def temporary_files(work: Path) -> list[str]:
    return [str(p) for p in Path(work).rglob("*") if re.search(r"\.tmp-|\.partial$|\.old-", p.name)]


def one_line_error(stderr: str) -> str | None:
    """The single 'error: ...' line, or None when stderr is anything else (a traceback, several lines)."""
    lines = stderr.strip().splitlines()
    if len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr:
        return lines[0]
    return None
