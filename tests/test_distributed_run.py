"""`torchrun --nproc-per-node 2 -m rladctl run RECIPE` on CPU (gloo) leaves what one process leaves:
the same files (pruned alike), Parquet parts byte for byte, final weights within 1e-6.

Both runs are subprocesses with one thread each (OMP_NUM_THREADS=1), since byte equality includes
the last bit of every float and CPU kernels sum in a thread-dependent order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TASK_SETS, sets
from safetensors.torch import load_file
from test_distributed import torchrun

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
    """Two iterations, the first pruned after the second (keep_last = 1) on both. About 75 s on 2
    loaded cores, nearly all of it the three processes' start-up (one iteration takes as long)."""
    one_process(run_args(models, tmp_path / "one", 2))
    torchrun(*run_args(models, tmp_path / "two", 2))
    assert_same_run(tmp_path / "two", tmp_path / "one", "iter-0001/checkpoint")
    assert not (tmp_path / "two" / "iter-0000" / "checkpoint").exists()


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
    torchrun(*args)
    assert_same_run(tmp_path / "two", tmp_path / "one", "iter-0002/checkpoint")
