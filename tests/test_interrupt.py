"""Ctrl-C: one line saying how to resume, exit code 130, and the same command then finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import TASK_SETS

RESUME_LINE = "interrupted; re-run the same command to resume"


def rollout_command(models, out) -> list[str]:
    sets = [arg for s in TASK_SETS for arg in ("--set", s)]
    return [
        sys.executable,
        "-m",
        "rladctl",
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "200",
        "-G",
        "8",
        "--set",
        "rollout.prompts_per_part=4",
        "--set",
        "rollout.max_new_tokens=8",
        *sets,
        "--out",
        str(out),
    ]


def test_ctrl_c_says_how_to_resume_and_the_rerun_completes(models, tmp_path):
    out = tmp_path / "r"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    # Python ignores SIGINT when its parent did (a background job): restore the default for the child.
    child = subprocess.Popen(
        rollout_command(models, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert child.poll() is None, "the rollout ended before it could be interrupted"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == RESUME_LINE
    assert not (out / "_manifest.json").exists()
    done = subprocess.run(rollout_command(models, out), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "_manifest.json").exists()
