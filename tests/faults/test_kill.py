"""SIGKILL at seeded random points of every stage and of `rladctl run`, then re-run to completion.

The kill points are file-system events (see inject.py): a clean run counts them, and each seed draws
one, and whether the kill lands just before or just after it (a Parquet, torch or safetensors write
is torn in half first). Some seeds kill the resumed run a second time. After every kill, whatever is
marked complete must be intact; after the final re-run the outputs must equal the clean run's:
the same files, Parquet parts byte for byte, tensors by value, metrics and manifests but for
timings. Seeds 0-1 run in CI; the rest with RLADCTL_SLOW=1.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import TASK_SETS, sets
from faultlib import (
    STATS,
    complete_things_are_intact,
    differences,
    rows_of,
    run_faulted,
    snapshot,
    temporary_files,
)

FAST_SEEDS = 2
ALL_SEEDS = 10


def stage_args(stage: str, models, shards, work: Path) -> list[str]:
    out = str(work / "out")
    if stage == "rollout":
        return [
            "rollout",
            "--model",
            str(models["student"]),
            "--out",
            out,
            *sets(
                *TASK_SETS,
                "rollout.num_prompts=6",
                "rollout.group_size=4",
                "rollout.max_new_tokens=8",
                "rollout.prompts_per_part=2",
            ),
        ]
    if stage == "score-teacher":
        return ["score-teacher", "--teacher", str(models["teacher"]), "--input", str(shards["rollouts"]), "--out", out]
    if stage == "train":
        return [
            "train",
            "--model",
            str(shards["student"]),
            "--input",
            str(shards["scored"]),
            "--out",
            out,
            "--objective",
            "trrd",
            *sets("train.mini_batches=4", "train.save_every=1", "train.lr=1e-3"),
        ]
    if stage == "eval":
        return [
            "eval",
            "--model",
            str(models["student"]),
            "--out",
            out,
            "--pass-at",
            "2",
            *sets(*TASK_SETS, "eval.num_prompts=4", "eval.max_new_tokens=6"),
        ]
    if stage == "run":
        return [
            "run",
            str(Path(__file__).parents[2] / "recipes" / "demo.toml"),
            *sets(
                *TASK_SETS,
                f"run.dir={out}",
                f"run.student={models['student']}",
                f"run.teacher={models['teacher']}",
                "run.iterations=2",
                "rollout.num_prompts=4",
                "rollout.group_size=4",
                "rollout.max_new_tokens=6",
                "rollout.prompts_per_part=1",
                "eval.pass_at=2",
                "eval.num_prompts=4",
                "eval.max_new_tokens=6",
                "train.lr=1e-3",
            ),
        ]
    raise ValueError(stage)


STAGES = ["rollout", "score-teacher", "train", "eval", "run"]
_REFERENCE: dict[str, tuple] = {}


@pytest.fixture
def reference(models, shards, tmp_path_factory):
    """One clean, counted run per stage: (its events, what it left)."""

    def get(stage: str):
        if stage not in _REFERENCE:
            work = tmp_path_factory.mktemp(f"reference-{stage}")
            clean = run_faulted(stage_args(stage, models, shards, work), work)
            assert clean.returncode == 0, clean.stderr
            _REFERENCE[stage] = (clean.events, snapshot(work), rows_of(work))
        return _REFERENCE[stage]

    return get


@pytest.mark.parametrize("stage", STAGES)
def test_two_clean_runs_leave_identical_outputs(stage, models, shards, reference, tmp_path):
    """Reproducibility on CPU: the same command and seed give the same bytes, tensors and metrics.

    The reference ran forked from the test suite's fork server; this run starts a fresh
    interpreter, as a user's does. The same events in the same order mean every kill point of
    the forked runs is an instant a user's process passes through.
    """
    events, want, _ = reference(stage)
    again = run_faulted(stage_args(stage, models, shards, tmp_path), tmp_path, fresh=True)
    assert again.returncode == 0, again.stderr
    assert [name for _, name, _ in again.events] == [name for _, name, _ in events], "kill points must be stable"
    assert differences(snapshot(tmp_path), want) == []


SEEDS = [pytest.param(s, marks=pytest.mark.slow) if s >= FAST_SEEDS else s for s in range(ALL_SEEDS)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stage", STAGES)
def test_killed_at_a_random_event_then_rerun_equals_a_clean_run(stage, seed, models, shards, reference, tmp_path):
    events, want, want_rows = reference(stage)
    rng = random.Random(f"{stage}-{seed}")
    args = stage_args(stage, models, shards, tmp_path)
    kills = 0
    for _ in range(2 if seed % 3 == 2 else 1):  # every third seed also kills the resumed run
        point = rng.randint(1, len(events))
        when = rng.choice(["before", "after"])
        outcome = run_faulted(args, tmp_path, f"kill:{point}:{when}")
        if not outcome.killed:  # a resumed run can finish before it reaches the point
            assert outcome.returncode == 0, outcome.stderr
            continue
        STATS["kills injected"] += 1
        kills += 1
        assert complete_things_are_intact(tmp_path) == [], (
            f"after a kill at event {point} ({when}): {events[point - 1]}"
        )

    final = run_faulted(args, tmp_path)
    assert final.returncode == 0, final.stderr
    assert temporary_files(tmp_path) == []
    lost = want_rows - rows_of(tmp_path)
    STATS["rows lost"] += len(lost)
    assert differences(snapshot(tmp_path), want) == []
    STATS["kills recovered"] += kills
