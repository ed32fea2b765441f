"""`torchrun --nproc-per-node 2 -m rladctl run RECIPE` on CPU (gloo) leaves what one process leaves:
the same files (pruned alike), Parquet parts byte for byte, final weights within 1e-6.

Both runs are subprocesses with one thread each (OMP_NUM_THREADS=1), since byte equality includes
the last bit of every float and CPU kernels sum in a thread-dependent order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TASK_SETS, sets
from safetensors.torch import load_file
from test_distributed import torchrun

from rladctl.store.iterations import read_record

REPO = Path(__file__).resolve().parents[1]


def run_args(models, run_dir: Path, iterations: int) -> list[str]:
    return [
        "run",
        str(REPO / "recipes" / "demo.toml"),
        *sets(
            *TASK_SETS,
            f"run.dir={run_dir}",
            f"run.student={models['student']}",
            f"run.teacher={models['teacher']}",
            f"run.iterations={iterations}",
            "run.keep_last=1",
            "run.optimizer_state_every=5",
            "run.eval_before=false",
            "rollout.num_prompts=4",
            "rollout.group_size=4",
            "rollout.max_new_tokens=6",
            "rollout.prompts_per_part=1",  # 4 parts: 2 per rank
            "eval.pass_at=2",
            "eval.num_prompts=4",
            "eval.max_new_tokens=6",
            "train.lr=1e-3",
        ),
    ]


def one_process(args: list[str]) -> None:
    env = dict(os.environ, RLADCTL_QUIET="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "rladctl", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-4000:]


def files(run_dir: Path) -> dict[str, Path]:
    hidden = ("tensorboard", "wandb")
    return {
        str(p.relative_to(run_dir)): p
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not any(h in p.parts for h in hidden)
    }


def assert_same_run(two: Path, one: Path, final: str) -> None:
    got, want = files(two), files(one)
    assert got.keys() == want.keys()
    parquet = [k for k in want if k.endswith(".parquet")]
    assert parquet and all(got[k].read_bytes() == want[k].read_bytes() for k in parquet)
    a, b = load_file(two / final / "model.safetensors"), load_file(one / final / "model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_run_on_two_ranks_equals_one_process(models, tmp_path):
    """Three iterations, the first two pruned (keep_last = 1) on both. Every rank keeps its models
    and AdamW state in memory, so only the last checkpoint holds the state, as in one process. About
    75 s on 2 loaded cores, nearly all of it the three processes' start-up."""
    one_process(run_args(models, tmp_path / "one", 3))
    torchrun(*run_args(models, tmp_path / "two", 3))
    assert_same_run(tmp_path / "two", tmp_path / "one", "iter-0002/checkpoint")
    assert not (tmp_path / "two" / "iter-0000" / "checkpoint").exists()
    assert [read_record(tmp_path / "two" / f"iter-000{i}")["checkpoint"]["optimizer_state"] for i in range(3)] == [
        False,
        False,
        True,
    ]


def test_fsdp_ranks_that_keep_their_models_write_what_ranks_that_reload_write(models, tmp_path):
    """FSDP2: each rank gathers an unsharded copy once per iteration and keeps its shard of the
    AdamW state; the files equal those of ranks that load everything from disk every stage (FSDP2's
    sums run in another order than one process's, so that is the exact reference)."""
    fsdp = ["--set", 'train.parallel="fsdp"']
    torchrun(*run_args(models, tmp_path / "kept", 3), *fsdp)
    torchrun(*run_args(models, tmp_path / "loaded", 3), *fsdp, "--set", "run.keep_models=false")
    assert_same_run(tmp_path / "kept", tmp_path / "loaded", "iter-0002/checkpoint")
    assert read_record(tmp_path / "kept" / "iter-0001")["checkpoint"]["optimizer_state"] is False


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank (a child of its elastic agent)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"TORCHELASTIC_RUN_ID" in b"".join(environ):
            if int(stat.rsplit(")", 1)[1].split()[1]) == launcher.pid:
                return int(pid)
    return None


@pytest.mark.slow
def test_a_rank_killed_mid_iteration_then_rerun_equals_an_uninterrupted_run(models, tmp_path):
    """SIGKILL rank 1 once iteration 1's rollouts are written: torchrun ends, the same command
    resumes, and the result is the one-process run's."""
    one_process(run_args(models, tmp_path / "one", 3))
    args = run_args(models, tmp_path / "two", 3)
    env = dict(os.environ, RLADCTL_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "rladctl"]
    launcher = subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = tmp_path / "two" / "iter-0001" / "rollouts" / "_manifest.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = rank_pid(launcher, 1)
    assert pid is not None and launcher.poll() is None, "the run ended before the kill"
    os.kill(pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    # One line from rank 0, no traceback of rladctl's (torchrun then prints its own report, and its traceback).
    assert len(errors) == 1 and not re.search(r'File "[^"]*/(rladctl|stages)/', stderr), stderr[-3000:]
    assert errors[0].startswith("error: rank 1 of 2 died during ") and " of iteration 2 (killed: " in errors[0]
    torchrun(*args)
    assert_same_run(tmp_path / "two", tmp_path / "one", "iter-0002/checkpoint")


def test_rank_0_names_a_rank_that_is_gone_and_its_stage(tmp_path, monkeypatch):
    """What rank 0 says once a peer has died: the rank whose process on this node no longer runs
    (a zombie counts as gone), or that recorded an error (any node), with its last stage."""
    import json
    import socket

    from rladctl import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    here = socket.gethostname()
    peers = {0: (here, os.getpid()), 1: (here, victim.pid)}
    record = {"rank": 1, "host": here, "pid": victim.pid, "stage": "score-teacher of iteration 2", "error": None}
    (tmp_path / "rank-1").write_text(json.dumps(record))
    assert distributed.lost_ranks(tmp_path, 0, peers) == []
    victim.kill()
    deadline = time.monotonic() + 10
    while not distributed.lost_ranks(tmp_path, 0, peers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert distributed.lost_ranks(tmp_path, 0, peers) == [record]  # a zombie: not reaped yet
    victim.wait()
    error = distributed.rank_lost_error(distributed.lost_ranks(tmp_path, 0, peers), "train of iteration 2", "runs/x")
    assert error.line() == (
        "rank 1 of 2 died during score-teacher of iteration 2 (killed: out of memory (the kernel's OOM killer) "
        "or SIGKILL), in runs/x. Re-run the same command (any number of ranks) to resume; finished parts and "
        "iterations are kept."
    )
    elsewhere = {0: (here, os.getpid()), 1: ("another-node", 1)}
    assert distributed.lost_ranks(tmp_path, 0, elsewhere) == []  # cannot be told from a live rank
    (tmp_path / "rank-1").write_text(json.dumps(record | {"error": "OutOfMemoryError: CUDA out of memory"}))
    error = distributed.rank_lost_error(distributed.lost_ranks(tmp_path, 0, elsewhere), "train", "runs/x")
    assert "rank 1 of 2 died during score-teacher of iteration 2 (OutOfMemoryError: CUDA out of memory)" in error.line()
