"""Bounded disk (`run.keep_last`, `run.keep_every`, `run.keep_artifacts`): a run killed at any
stage boundary of an iteration that prunes, then re-run, leaves what a clean run leaves, and a run
holds no more checkpoints than the keys allow.

The run: 4 iterations, keep_last = 1, keep_artifacts = "last", and the AdamW state saved with every
2nd checkpoint only (run.optimizer_state_every = 2), so a resume after iteration 2 must replay
train from checkpoint 1: pruning must keep it. Kill points are the clean run's file-system events
that complete something (a manifest, a checkpoint, a record) or prune (a rename out of sight, a
deletion), killed just after; three of them (``CI_POINTS``), the rest with RLADCTL_SLOW=1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import TASK_SETS, sets
from faultlib import STATS, complete_things_are_intact, differences, run_faulted, snapshot, temporary_files

REPO = Path(__file__).parents[2]


def run_args(models, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(REPO / "recipes" / "demo.toml"),
        *sets(
            *TASK_SETS,
            f"run.dir={out}",
            f"run.student={models['student']}",
            f"run.teacher={models['teacher']}",
            "run.iterations=4",
            "run.keep_last=1",
            "run.keep_artifacts=last",
            "run.optimizer_state_every=2",
            "rollout.num_prompts=4",
            "rollout.group_size=4",
            "rollout.max_new_tokens=6",
            "rollout.prompts_per_part=2",
            "eval.pass_at=2",
            "eval.num_prompts=4",
            "eval.max_new_tokens=6",
            "train.lr=1e-3",
            *extra,
        ),
    ]


_CLEAN: dict[str, tuple] = {}


def clean_run(models, tmp_path_factory):
    if "run" not in _CLEAN:
        work = tmp_path_factory.mktemp("prune-clean")
        done = run_faulted(run_args(models, work / "out"), work)
        assert done.returncode == 0, done.stderr
        _CLEAN["run"] = (done.events, snapshot(work))
    return _CLEAN["run"]


def boundary(event: tuple[int, str, str]) -> bool:
    """An event that completes something or prunes: a manifest or a record renamed into place, a
    checkpoint moved into place, a directory moved out of sight or deleted by the pruning."""
    _, name, path = event
    done = name == "replace" and ("._manifest.json.tmp-" in path or "._iteration.json.tmp-" in path)
    checkpoint = name == "rename" and "/checkpoint.tmp-" in path
    pruned = name in ("rename", "rmtree") and (
        path.endswith(("/checkpoint", "/rollouts", "/scored")) or "tmp-pruned" in path
    )
    return done or checkpoint or pruned


# In CI: iteration 3's scored manifest (the resume replays train 2 from checkpoint 1), its record
# (complete, nothing pruned yet), and the pruning of checkpoint 2 (iteration 2's artifacts still there).
CI_POINTS = (
    ("replace", r"iter-0003/scored/\._manifest\.json\.tmp-\d+"),
    ("replace", r"iter-0003/\._iteration\.json\.tmp-\d+"),
    ("rename", r"iter-0002/checkpoint"),
)


def kill_points(events) -> list[int]:
    """Every boundary from iteration 1 on, CI's first."""
    first = next(n for n, _, path in events if "/iter-0001" in path)
    points = [e for e in events if e[0] >= first and boundary(e)]
    ci = [
        next(n for n, name, path in points if name == want and re.fullmatch(pattern, path.split("/out/", 1)[-1]))
        for want, pattern in CI_POINTS
    ]
    return ci + [e[0] for e in points if e[0] not in ci]


def test_a_clean_run_keeps_what_the_keys_and_a_resume_need(models, tmp_path_factory):
    _, want = clean_run(models, tmp_path_factory)
    checkpoints = sorted({k.split("/")[1] for k in want if "/checkpoint/" in k})
    assert checkpoints == ["iter-0003"], checkpoints  # keep_last = 1; the final holds its AdamW state
    artifacts = sorted({k.split("/")[1] for k in want if "/rollouts/" in k or "/scored/" in k})
    assert artifacts == ["iter-0003"]
    assert [k for k in want if k.endswith("_iteration.json")] == [f"out/iter-{i:04d}/_iteration.json" for i in range(4)]
    assert {"out/report.md", "out/iterations.csv", "out/eval/step-0004/report.json"} <= want.keys()


KILLS = [pytest.param(k, marks=() if k < len(CI_POINTS) else pytest.mark.slow, id=f"point{k}") for k in range(36)]


@pytest.mark.parametrize("point", KILLS)
def test_killed_at_a_boundary_of_a_pruning_iteration_then_rerun_equals_a_clean_run(
    point, models, tmp_path_factory, tmp_path
):
    events, want = clean_run(models, tmp_path_factory)
    order = kill_points(events)
    if point >= len(order):
        pytest.skip(f"the run has {len(order)} boundaries")
    args = run_args(models, tmp_path / "out")
    killed = run_faulted(args, tmp_path, f"kill:{order[point]}:after")
    assert killed.killed, f"event {order[point]} was not reached: {killed.stderr}"
    STATS["kills injected"] += 1
    assert complete_things_are_intact(tmp_path) == []
    final = run_faulted(args, tmp_path)
    assert final.returncode == 0, final.stderr
    assert temporary_files(tmp_path) == []
    assert differences(snapshot(tmp_path), want) == []
    STATS["kills recovered"] += 1


def test_the_kill_points_are_every_boundary(models, tmp_path_factory):
    events, _ = clean_run(models, tmp_path_factory)
    points = kill_points(events)
    assert len(set(points)) == len(points) <= len(KILLS), len(points)
    named = [events[n - 1][2] for n in points]
    assert any("/.checkpoint.tmp-pruned" in p for p in named) and any("._iteration.json" in p for p in named)


def test_a_demo_sized_run_holds_at_most_keep_last_checkpoints(models, tmp_path):
    """The demo's shapes (16 prompts x G = 8, 8 new tokens, tiny models), 6 iterations, defaults but
    keep_last = 2: at the end, 2 checkpoints, and the record of every iteration; no more on disk than
    the dry run's estimate."""
    from conftest import run_cli

    args = [
        "run",
        str(REPO / "recipes" / "demo.toml"),
        *sets(
            *TASK_SETS,
            f"run.dir={tmp_path / 'run'}",
            f"run.student={models['student']}",
            f"run.teacher={models['teacher']}",
            "run.iterations=6",
            "run.optimizer_state_every=10",
            "eval.num_prompts=4",
        ),
    ]
    plan = run_cli(*args, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    disk = json.loads(plan.stdout)["disk"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    assert sorted(p.parent.name for p in run.glob("iter-*/checkpoint")) == ["iter-0004", "iter-0005"]
    assert len(list(run.glob("iter-*/_iteration.json"))) == 6
    assert len(list(run.glob("iter-*/rollouts"))) == 6  # keep_artifacts = "all" (the default)
    used = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    # Checkpoints 0-4 saved no AdamW state (optimizer_state_every = 10), so a resume after 4 replays
    # from the start: they were kept until the final one, which holds it, made them unneeded.
    assert used <= disk["end_bytes"] * 1.5, (used, disk)


def test_a_rerun_reads_the_evaluations_of_pruned_checkpoints_from_their_samples(models, tmp_path):
    """eval_every = 1 with keep_last = 1: a complete run re-run skips every iteration, and takes the
    evaluations of the pruned checkpoints from their samples (the same report); other eval settings
    cannot be checked against a pruned checkpoint, and other train settings against a record: each
    is refused in one line."""
    from conftest import run_cli
    from faultlib import one_line_error

    args = run_args(models, tmp_path / "out", "run.iterations=3", "run.eval_every=1", "run.eval_before=false")
    first = run_cli(*args, "--json")
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "out" / "iter-0000" / "checkpoint").exists()
    report = (tmp_path / "out" / "report.md").read_text()
    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["evals"] == json.loads(first.stdout)["evals"]
    assert (tmp_path / "out" / "report.md").read_text() == report
    other = run_cli(*args, *sets("eval.temperature=0.9"))
    error = one_line_error(other.stderr)
    assert other.returncode == 2 and error and "eval/step-0001" in error and "pruned" in error, other.stderr
    # A record of other settings: refused before any work, naming the iteration.
    changed = run_cli(*args, *sets("train.lr=2e-3"))
    error = one_line_error(changed.stderr)
    assert changed.returncode == 2 and error and "iteration 0 " in error and "other settings" in error, changed.stderr
