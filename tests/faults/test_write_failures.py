"""Writes that fail: an injected ENOSPC/EROFS at seeded write events, a real full tmpfs, a read-only one.

A stage whose write fails must stop with one 'error: ...' line naming the path and the reason (exit 2),
leave no temporary file, leave every complete artifact as it was, and a re-run once there is room
must finish exactly like a clean run. Seeds 0-1 run in CI; the rest with RLADCTL_SLOW=1.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from faultlib import (
    STATS,
    WRITE_EVENTS,
    complete_things_are_intact,
    differences,
    one_line_error,
    run_faulted,
    snapshot,
)
from test_kill import STAGES, reference, stage_args  # noqa: F401 (reference is a fixture)

FAST_SEEDS = 2
ALL_SEEDS = 6
SEEDS = [pytest.param(s, marks=pytest.mark.slow) if s >= FAST_SEEDS else s for s in range(ALL_SEEDS)]
# torch.save reports a full disk without its errno: "write failed; is the disk full?"
REASON = {"enospc": r"No space left on device|is the disk full", "erofs": r"Read-only file system"}


def leftovers(work: Path) -> list[str]:
    """Temporary files a process that exited on its own should have removed."""
    return [str(p) for p in work.rglob("*") if ".tmp-" in p.name]


def assert_clean_failure(outcome, work: Path, reason: str) -> None:
    line = one_line_error(outcome.stderr)
    assert outcome.returncode == 2 and line, outcome.stderr
    assert re.search(reason, line) and str(work) in line, line
    assert "re-run" in line or "choose" in line, line  # says how to go on
    assert leftovers(work) == []
    assert complete_things_are_intact(work) == []


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stage", STAGES)
def test_a_failed_write_is_one_line_and_a_rerun_recovers(
    stage,
    seed,
    models,
    shards,
    reference,  # noqa: F811 (test_kill's fixture)
    tmp_path,
):
    events, want, _ = reference(stage)
    rng = random.Random(f"write-{stage}-{seed}")
    kind = ["enospc", "erofs"][seed % 2]
    writes = [number for number, name, _ in events if name in WRITE_EVENTS]
    point = rng.choice(writes)
    args = stage_args(stage, models, shards, tmp_path)
    outcome = run_faulted(args, tmp_path, f"{kind}:{point}")
    STATS["write failures injected"] += 1
    if outcome.returncode != 0:  # a failed directory fsync is harmless and ignored; all else must stop
        assert_clean_failure(outcome, tmp_path, REASON[kind])
    final = run_faulted(args, tmp_path)
    assert final.returncode == 0, final.stderr
    assert differences(snapshot(tmp_path), want) == []
    STATS["write failures recovered"] += 1


# --------------------------------------------------------------------------------------------
# a real file system: full, then read-only


@pytest.fixture
def tmpfs(tmp_path):
    """A 64 MiB tmpfs at tmp_path/fs (needs root, or CAP_SYS_ADMIN)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> Path:
    """Fill ``mount`` up to ``leave`` bytes of free space."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, free - leave))
    return filler


# Room left: enough for some of the stage's files but not all (a tmpfs counts whole 4 KiB pages). For train,
# 1 MiB fails the weights (safetensors), 6 MiB the optimizer state after them (torch.save).
@pytest.mark.parametrize(("stage", "room"), [("score-teacher", 8 * 1024), ("train", 1 << 20), ("train", 6 << 20)])
def test_a_full_disk_stops_cleanly_and_a_rerun_with_room_recovers(
    stage,
    room,
    models,
    shards,
    reference,  # noqa: F811 (test_kill's fixture)
    tmpfs,
):
    _, want, _ = reference(stage)
    # A complete artifact on the same file system must come through untouched.
    kept = tmpfs / "kept"
    shutil.copytree(shards["rollouts"], kept)
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    work = tmpfs / "w"
    filler = fill(tmpfs, leave=room)
    outcome = run_faulted(stage_args(stage, models, shards, work), work)
    STATS["write failures injected"] += 1
    assert_clean_failure(outcome, work, REASON["enospc"])
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before

    filler.unlink()
    final = run_faulted(stage_args(stage, models, shards, work), work)
    assert final.returncode == 0, final.stderr
    assert differences(snapshot(work), want) == []
    STATS["write failures recovered"] += 1


def test_a_read_only_output_is_one_line_and_a_rerun_once_writable_completes(models, tmpfs):
    out = tmpfs / "w" / "out"
    args = ["rollout", "--model", str(models["student"]), "--out", str(out), "--num-prompts", "2"]
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    done = run_faulted(args, tmpfs.parent / "elsewhere")
    STATS["write failures injected"] += 1
    line = one_line_error(done.stderr)
    assert done.returncode == 2 and line and "Read-only file system" in line and str(out) in line, done.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    again = run_faulted(args, tmpfs.parent / "elsewhere")
    assert again.returncode == 0 and (out / "_manifest.json").exists(), again.stderr
    STATS["write failures recovered"] += 1
