"""The on-policy loop's ledger and its disk: one record per complete iteration, and which
iterations' files `rladctl run` keeps (``run.keep_last``, ``run.keep_every``, ``run.keep_artifacts``).

    RUN_DIR/iter-NNNN/_iteration.json            written last, atomically, once iteration N is
                                                 complete: its report row and train metrics, the
                                                 identity of its checkpoint, its settings' fingerprint
    RUN_DIR/iter-NNNN/{rollouts,scored,checkpoint}  removed once newer iterations are complete,
                                                 unless a keep_* key or a resume still needs them

A record lets a resumed run skip its iteration without reading any of the iteration's files, so
old checkpoints and artifacts can go. What a resume still needs is kept: the newest checkpoint,
and, when that one was saved without its AdamW state (``run.optimizer_state_every``), every
checkpoint and training input back to the newest one with it, from which train is replayed.

Pruning renames a directory to a hidden temporary sibling (atomic) before deleting it, and only
after the record of a newer iteration exists: a kill leaves each directory whole or gone, and the
next prune removes what a killed one left half-deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl.store.files import TMP_MARK, atomic_write_json, read_json

RECORD = "_iteration.json"
PRUNABLE = ("checkpoint", "rollouts", "scored")  # an iteration's directories, in the order they go
PRUNED_MARK = f"{TMP_MARK}pruned"


class Ledger:
    """The records of one run directory (``iter_dir(i)`` is iteration i's directory), read once each,
    and the pruning that follows them (``prune_after``)."""

    def __init__(self, iter_dir: Callable[[int], Path], retention: Retention, continue_optimizer: bool):
        self.iter_dir, self.retention, self.continue_optimizer = iter_dir, retention, continue_optimizer
        self._read: dict[int, dict] = {}
        self._settled_below = 0  # iterations below it hold only what is kept for good (run.keep_every)

    def read(self, i: int) -> dict[str, Any] | None:
        if i not in self._read:
            record = read_record(self.iter_dir(i))
            if record is None:
                return None
            self._read[i] = record
        return self._read[i]

    def write(self, i: int, record: dict[str, Any]) -> None:
        """Iteration i is complete: its record, written last (rank 0 under torchrun)."""
        from rladctl import distributed

        distributed.main_only(lambda: write_record(self.iter_dir(i), record))
        self._read[i] = record

    def prune_after(self, newest: int) -> int:
        """Iteration ``newest`` has its record: remove what the keys do not keep and no resume needs
        (rank 0); bytes freed. Nothing while an iteration up to ``newest`` has no record (a run
        directory of an older rladctl): its files are the only account of it."""
        from rladctl import distributed

        records = [self.read(j) for j in range(newest + 1)]
        if self.retention.keep_last == 0 or any(r is None for r in records):
            return 0
        has_state = [r["checkpoint"]["optimizer_state"] for r in records]
        start = replay_start(newest, has_state, self.continue_optimizer)
        checkpoints = self.retention.checkpoints(newest, start)
        artifacts = self.retention.artifacts(newest, start)
        dirs = {j: self.iter_dir(j) for j in range(self._settled_below, newest + 1)}
        freed = distributed.main_only(lambda: prune(dirs, checkpoints, artifacts)) or 0
        self._settled_below = max(0, min(newest - self.retention.keep_last + 1, start))
        return freed


def read_record(iter_dir: Path) -> dict[str, Any] | None:
    """Iteration ``iter_dir``'s record, or None while the iteration is not complete."""
    return read_json(Path(iter_dir) / RECORD)


def write_record(iter_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(Path(iter_dir) / RECORD, record)


def remove_record(iter_dir: Path) -> None:
    (Path(iter_dir) / RECORD).unlink(missing_ok=True)


@dataclass(frozen=True)
class Retention:
    """Which iterations keep their checkpoint and their rollouts/scored artifacts."""

    keep_last: int  # the newest N checkpoints; 0 = every one
    keep_every: int  # also every N-th (the checkpoint after N, 2N, ... updates); 0 = none
    keep_artifacts: str  # "all": every iteration's rollouts and scored; "last": those of kept checkpoints

    def checkpoints(self, newest: int, replay_from: int) -> set[int]:
        """Iterations <= ``newest`` whose checkpoints stay once iteration ``newest`` is complete;
        ``replay_from`` (-1: the start model) is the oldest one a resume replays train from."""
        if self.keep_last == 0:
            return set(range(newest + 1))
        keep = set(range(max(0, newest - self.keep_last + 1), newest + 1))
        keep |= set(range(max(0, replay_from), newest + 1))
        if self.keep_every:
            keep |= {j for j in range(newest + 1) if (j + 1) % self.keep_every == 0}
        return keep

    def artifacts(self, newest: int, replay_from: int) -> set[int]:
        """Iterations <= ``newest`` whose rollouts and scored artifacts stay (a replay reads them)."""
        if self.keep_artifacts == "all":
            return set(range(newest + 1))
        return self.checkpoints(newest, replay_from)


def replay_start(newest: int, has_state: list[bool], continue_optimizer: bool) -> int:
    """The checkpoint a resume after iteration ``newest`` replays train from (rladctl.stages.run's
    ``rebuild_optimizer_state``): ``newest`` itself when it holds its AdamW state (or no state is
    continued), else the newest earlier one that holds it, -1 (the start model) when none does.
    ``has_state[j]``: checkpoint j was saved with its AdamW state."""
    if not continue_optimizer:
        return newest
    j = newest
    while j >= 0 and not has_state[j]:
        j -= 1
    return j


def prune(iter_dirs: dict[int, Path], keep_checkpoints: set[int], keep_artifacts: set[int]) -> int:
    """Remove the directories of the iterations in ``iter_dirs`` (iteration -> its directory) that
    are not kept, and what an earlier, killed prune left; bytes freed. Call it only once the record
    of the newest iteration that ``keep_*`` were computed for exists."""
    freed = 0
    for i, d in iter_dirs.items():
        for leftover in d.glob(f".*{PRUNED_MARK}"):
            freed += remove_tree(leftover)
        for name in PRUNABLE:
            kept = keep_checkpoints if name == "checkpoint" else keep_artifacts
            if i not in kept and (d / name).exists():
                freed += prune_dir(d / name)
    return freed


def prune_dir(path: Path) -> int:
    """Rename ``path`` out of sight (atomic), then delete it; bytes freed."""
    hidden = path.with_name(f".{path.name}{PRUNED_MARK}")
    if hidden.exists():
        remove_tree(hidden)
    os.rename(path, hidden)
    return remove_tree(hidden)


def remove_tree(path: Path) -> int:
    size = tree_bytes(path)
    shutil.rmtree(path, ignore_errors=True)
    return size


def tree_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# --------------------------------------------------------------------------------------------
# the disk a run will hold, before it runs (`rladctl run --dry-run`)


def safetensors_numel(directory: str | Path) -> int | None:
    """Parameters stored in a model directory's safetensors files, read from their headers only
    (no weights load); None when there are none (a hub id, another format)."""
    files = sorted(Path(directory).glob("*.safetensors")) if Path(directory).is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for dim in info["shape"]:
                    n *= dim
                total += n
    return total


@dataclass(frozen=True)
class DiskPlan:
    """Bytes per file kind; ``peak`` simulates the loop's keep rules iteration by iteration."""

    iterations: int
    checkpoint_bytes: int  # weights (float32) + tokenizer and metrics, about
    optimizer_bytes: int  # AdamW's two float32 moments, in the checkpoints that hold them
    artifact_bytes: int  # one iteration's rollouts + scored
    snapshot_bytes: int  # train's in-call snapshots (<out>.partial), while one train runs
    eval_bytes: int  # every evaluation (samples and report) and every record: never pruned

    def peak(self, retention: Retention, has_state: list[bool], continue_optimizer: bool) -> tuple[int, int]:
        """(bytes at the peak, bytes at the end) of the run directory."""
        size = lambda j: self.checkpoint_bytes + (self.optimizer_bytes if has_state[j] else 0)  # noqa: E731
        peak = end = 0
        for n in range(-1, self.iterations - 1):  # iteration n + 1 is being written, n is the newest complete
            start = replay_start(n, has_state, continue_optimizer) if n >= 0 else -1
            ckpts = retention.checkpoints(n, start) if n >= 0 else set()
            arts = retention.artifacts(n, start) if n >= 0 else set()
            held = sum(size(j) for j in ckpts) + len(arts) * self.artifact_bytes
            peak = max(peak, held + size(n + 1) + self.artifact_bytes + self.snapshot_bytes)
        last = self.iterations - 1
        start = replay_start(last, has_state, continue_optimizer)
        end = sum(size(j) for j in retention.checkpoints(last, start))
        end += len(retention.artifacts(last, start)) * self.artifact_bytes
        return peak + self.eval_bytes, end + self.eval_bytes
