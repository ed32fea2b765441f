"""train under faults: SIGKILL then --resume, inputs it must refuse, losses that go non-finite."""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, sets, task_corpus
from test_train import max_change, train, weights

from rladctl.store.artifacts import MANIFEST
from rladctl.store.checkpoint import load_training_state, read_manifest, read_metrics

TIMING = ("seconds", "tokens_per_s")  # the only metrics allowed to differ between equal runs


def refused(done: subprocess.CompletedProcess, out: Path, pattern: str) -> str:
    """Exit 2, one stderr line 'error: ...' matching ``pattern``, no traceback, no checkpoint."""
    import re

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not (out / MANIFEST).exists()
    return lines[0]


def cli_train(
    shards, out: Path, *extra: str, inputs: str = "scored", model: Path | None = None
) -> subprocess.CompletedProcess:
    return run_cli(
        "train", "--model", str(model or shards["student"]), "--input", str(shards[inputs]), "--out", str(out), *extra
    )


# --------------------------------------------------------------------------------------------
# SIGKILL and --resume

# Each snapshot is followed by a pause so that the kill lands mid-run: a tiny model would otherwise
# finish its six steps before the parent sees the first snapshot. The pause changes no number.
SLOW_SNAPSHOTS = """
import sys, time
import rladctl.store.snapshots as snapshots
save = snapshots.save_checkpoint
snapshots.save_checkpoint = lambda *a, **k: (save(*a, **k), time.sleep(1.0))
from rladctl.cli import main
sys.argv = ["rladctl", *sys.argv[1:]]
main()
"""


def test_resume_after_sigkill_continues_from_the_last_snapshot_and_equals_an_uninterrupted_run(shards, tmp_path):
    extra = ["--objective", "trrd", *sets("train.mini_batches=6", "train.save_every=1", "train.lr=1e-3")]
    train(shards, tmp_path / "full", 'objective.name="trrd"', "train.mini_batches=6", "train.save_every=1")

    killed, partial = tmp_path / "killed", tmp_path / "killed.partial"
    args = ["train", "--model", str(shards["student"]), "--input", str(shards["scored"]), "--out", str(killed), *extra]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SNAPSHOTS, *args],
        env=dict(os.environ, RLADCTL_QUIET="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (partial / "step-000001" / MANIFEST).exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / MANIFEST).exists() and (partial / "step-000001" / MANIFEST).exists()
    snapshot = sorted(p for p in partial.glob("step-*") if ".tmp-" not in p.name)[-1]
    restored = read_metrics(snapshot)
    assert 1 <= len(restored) < 6
    # What a kill during a save leaves behind; the resumed run must clear it.
    (tmp_path / "killed.tmp-999999").mkdir()
    (partial / "step-000005.tmp-999999").mkdir()

    done = cli_train(shards, killed, *extra)
    assert done.returncode == 0, done.stderr
    assert max_change(weights(killed), weights(tmp_path / "full")) <= 1e-6
    resumed, full = read_metrics(killed), read_metrics(tmp_path / "full")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5, 6]
    strip = lambda ms: [{k: v for k, v in m.items() if k not in TIMING} for m in ms]  # noqa: E731
    for a, b in zip(strip(resumed), strip(full)):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=1e-6) for k in a)
    # The snapshot's steps were not redone: their timings are the killed process's own.
    assert [m["seconds"] for m in resumed[: len(restored)]] == [m["seconds"] for m in restored]
    state, state_full = (
        load_training_state(killed)["optimizer"]["state"],
        load_training_state(tmp_path / "full")["optimizer"]["state"],
    )
    assert all(
        torch.allclose(state[i]["exp_avg_sq"], state_full[i]["exp_avg_sq"], rtol=0, atol=1e-9) for i in state_full
    )
    assert not partial.exists() and not (tmp_path / "killed.tmp-999999").exists()


# --------------------------------------------------------------------------------------------
# inputs it must refuse


def test_refuses_an_unscored_artifact_for_an_objective_that_needs_the_teacher(shards, tmp_path):
    done = cli_train(shards, tmp_path / "c", "--objective", "trrd", inputs="rollouts")
    refused(done, tmp_path / "c", r"objective 'trrd' needs teacher log-probs .* score-teacher")


def test_unknown_objective_lists_the_valid_ones(shards, tmp_path):
    done = cli_train(shards, tmp_path / "c", "--objective", "trdd")
    refused(
        done, tmp_path / "c", r"unknown objective 'trdd'.*did you mean 'trrd'.*grpo, kdrl, opd, opd_grpo, sft, trrd"
    )


def test_refuses_a_student_whose_vocabulary_is_smaller_than_the_token_ids(shards, tmp_path):
    from rladctl.models.factory import init_model

    small = init_model(tmp_path / "small", "tiny-1m", texts=task_corpus(), vocab_size=270, seed=0)
    done = cli_train(shards, tmp_path / "c", "--objective", "grpo", model=small)
    refused(done, tmp_path / "c", r"token id \d+ but the student's vocabulary has 270 ids")


def test_refuses_a_student_with_another_tokenizer_of_the_same_size(shards, tmp_path):
    import json
    import shutil

    from rladctl.errors import ModelError

    other = tmp_path / "other"
    shutil.copytree(shards["student"], other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = (s for s, i in vocab.items() if i in (100, 101))
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, same specials: ids 100 and 101 swap meaning
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelError, match="tokenizers differ at id 100"):
        train(shards, tmp_path / "c", 'objective.name="grpo"', model=other)
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------------------------------------
# non-finite losses


def test_a_huge_lr_stops_the_run_with_a_clear_message(shards, tmp_path):
    # Step 1 moves every weight by ~1e30; from step 2 on every loss is NaN and is skipped, and
    # after train.max_bad_steps = 3 of them in a row the run stops.
    done = cli_train(shards, tmp_path / "c", "--objective", "kdrl", "--lr", "1e30", *sets("train.mini_batches=6"))
    line = refused(done, tmp_path / "c", r"the loss was non-finite for 3 consecutive steps \(at step 4\)")
    assert "the last good checkpoint is" in line and "lower train.lr" in line


def test_an_lr_whose_update_overflows_stops_and_leaves_the_previous_checkpoint_intact(shards, tmp_path):
    from rladctl.store.snapshots import TrainingDiverged

    out = tmp_path / "ckpt"
    train(shards, out, 'objective.name="grpo"')
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # AdamW's first step size is lr / (1 - beta1) = 1e39: more than float32 holds.
    with pytest.raises(TrainingDiverged, match=r"optimizer update overflowed at step 1 .*lower train.lr"):
        train(shards, out, 'objective.name="grpo"', "train.lr=1e38", overwrite=True)
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def poison(monkeypatch, calls: set[int]) -> None:
    """Make the objective's loss NaN on the given calls (one call per step here: 4 rows per step
    fit one micro-batch)."""
    import rladctl.objectives as objectives

    real, counter = objectives.get_objective, itertools.count()

    def get_objective(name):
        fn = real(name)

        def poisoned(inputs, cfg):
            out = fn(inputs, cfg)
            if next(counter) in calls:
                out.loss = out.loss * float("nan")
            return out

        return poisoned

    monkeypatch.setattr(objectives, "get_objective", get_objective)


def test_a_single_non_finite_step_is_skipped_unless_it_is_the_last(shards, tmp_path, monkeypatch):
    from rladctl.store.snapshots import TrainingDiverged

    poison(monkeypatch, {1, 7})  # calls 0-3: the first run's steps; 4-7: the second's
    summary = train(shards, tmp_path / "ckpt", 'objective.name="grpo"', "train.mini_batches=4")
    metrics = read_metrics(tmp_path / "ckpt")
    assert summary.skipped_steps == 1 and [m["skipped"] for m in metrics] == [False, True, False, False]
    assert all(bool(torch.isfinite(w).all()) for w in weights(tmp_path / "ckpt").values())
    assert all(math.isfinite(m["loss"]) for m in metrics if not m["skipped"])
    # A skipped last step would leave, as the final weights, those that gave the non-finite loss.
    with pytest.raises(TrainingDiverged, match=r"non-finite for 1 consecutive step \(at step 4, the last"):
        train(shards, tmp_path / "last", 'objective.name="grpo"', "train.mini_batches=4")
    assert not (tmp_path / "last").exists()


def test_consecutive_non_finite_steps_stop_and_name_the_last_good_snapshot(shards, tmp_path, monkeypatch):
    from rladctl.store.snapshots import TrainingDiverged

    poison(monkeypatch, {2, 3, 4})
    with pytest.raises(TrainingDiverged, match=r"non-finite for 3 consecutive steps \(at step 5\).*step-000001"):
        train(shards, tmp_path / "ckpt", 'objective.name="grpo"', "train.mini_batches=6")
    # Step 3 (0-based 2) was the first bad one; snapshot step-000002 holds the weights it trained
    # on, so step-000001 is the last one known good. Both stay, complete; no checkpoint is written.
    partial = tmp_path / "ckpt.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["step-000001", "step-000002"]
    assert all(read_manifest(partial / name) for name in ("step-000001", "step-000002"))
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("manifest_name", ["_manifest.json", "manifest.json"])
def test_a_snapshot_removal_cut_short_leaves_no_manifest_without_its_weights(tmp_path, monkeypatch, manifest_name):
    """`discard` takes every manifest away before any file, so a kill midway cannot leave a directory
    that claims to be complete (found by the slow kill tests: train seeds 2, 5, 9)."""
    import rladctl.store.snapshots as snapshots

    snap = tmp_path / "out.partial" / "step-000001"
    (snap / "training_state").mkdir(parents=True)
    for name in (manifest_name, "config.json", "model.safetensors", "training_state/state.pt"):
        (snap / name).write_text("x")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies as the files start to go

    monkeypatch.setattr(snapshots.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        snapshots.discard(tmp_path / "out.partial")
    assert not (snap / manifest_name).exists() and (snap / "model.safetensors").exists()
    monkeypatch.undo()
    snapshots.discard(tmp_path / "out.partial")
    assert not (tmp_path / "out.partial").exists()
