"""The loop's keep rules (rladctl/store/iterations.py): which checkpoints and artifacts stay, where a
resume replays from, what pruning removes, and the disk a run holds, on hand-derived cases."""

from __future__ import annotations

import pytest

from rladctl.store.iterations import DiskPlan, Retention, prune, replay_start, safetensors_numel


@pytest.mark.parametrize(
    ("keep", "newest", "replay_from", "want"),
    [
        (Retention(2, 0, "all"), 5, 5, {4, 5}),  # the newest two
        (Retention(2, 0, "all"), 5, 2, {2, 3, 4, 5}),  # and back to where a replay starts
        (Retention(2, 0, "all"), 5, -1, {0, 1, 2, 3, 4, 5}),  # a replay from the start model
        (Retention(1, 3, "all"), 7, 7, {2, 5, 7}),  # every 3rd: after 3 and 6 updates
        (Retention(0, 0, "all"), 3, 3, {0, 1, 2, 3}),  # keep_last = 0: every one
        (Retention(3, 0, "all"), 1, 1, {0, 1}),
    ],
)
def test_kept_checkpoints(keep, newest, replay_from, want):
    assert keep.checkpoints(newest, replay_from) == want


def test_kept_artifacts_all_or_those_of_kept_checkpoints():
    assert Retention(1, 0, "all").artifacts(4, 4) == {0, 1, 2, 3, 4}
    assert Retention(1, 0, "last").artifacts(4, 2) == {2, 3, 4}  # a replay of trains 3-4 reads 3 and 4


@pytest.mark.parametrize(
    ("newest", "has_state", "continue_optimizer", "want"),
    [
        (4, [False, True, False, False, False], True, 1),  # the newest checkpoint holding its AdamW state
        (4, [False] * 5, True, -1),  # none: replay from the start model
        (1, [False, True], True, 1),  # the newest holds it: nothing to replay
        (4, [False] * 5, False, 4),  # no state carried over: nothing to replay
    ],
)
def test_replay_start(newest, has_state, continue_optimizer, want):
    assert replay_start(newest, has_state, continue_optimizer) == want


def test_prune_removes_what_is_not_kept_and_what_a_killed_prune_left(tmp_path):
    dirs = {}
    for i in range(3):
        d = dirs[i] = tmp_path / f"iter-{i:04d}"
        for name in ("checkpoint", "rollouts", "scored"):
            (d / name).mkdir(parents=True)
            (d / name / "f").write_bytes(b"x" * 10)
        (d / "_iteration.json").write_text("{}")
    (dirs[2] / ".scored.tmp-pruned").mkdir()  # a killed prune had hidden it
    (dirs[2] / ".scored.tmp-pruned" / "f").write_bytes(b"x" * 5)
    freed = prune(dirs, keep_checkpoints={2}, keep_artifacts={1, 2})
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "iter-0000/_iteration.json",
        "iter-0001/_iteration.json",
        "iter-0001/rollouts/f",
        "iter-0001/scored/f",
        "iter-0002/_iteration.json",
        "iter-0002/checkpoint/f",
        "iter-0002/rollouts/f",
        "iter-0002/scored/f",
    ]
    assert freed == 4 * 10 + 5  # checkpoints 0 and 1, artifacts of 0, the leftover


def test_peak_disk_by_hand():
    """3 iterations; a checkpoint 10 bytes, its AdamW state 5 more (only the last has it), an
    iteration's artifacts 1; keep_last = 1. While iteration 2 is written, a resume would replay from
    the start model (no checkpoint holds a state), so 0 and 1 are kept: 10 + 10 + 2 artifacts held,
    plus iteration 2's 15 + 1 = 38. At the end only checkpoint 2 (15) and every artifact (3)."""
    disk = DiskPlan(
        iterations=3, checkpoint_bytes=10, optimizer_bytes=5, artifact_bytes=1, snapshot_bytes=0, eval_bytes=0
    )
    assert disk.peak(Retention(1, 0, "all"), [False, False, True], continue_optimizer=True) == (38, 18)
    # Without the AdamW state carried over, only the newest is held: 10 + 2 + 15 + 1 = 28.
    assert disk.peak(Retention(1, 0, "all"), [False, False, True], continue_optimizer=False) == (28, 18)


def test_parameters_counted_from_safetensors_headers(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.bfloat16)}, tmp_path / "model.safetensors")
    assert safetensors_numel(tmp_path) == 10
    assert safetensors_numel(tmp_path / "missing") is None
