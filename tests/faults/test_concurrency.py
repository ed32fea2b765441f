"""Two writers on one output, for every stage and for `rladctl run` (DESIGN §3: one writer at a time).

Writer A is a real process running the stage; once it holds the output's lock it is paused
(SIGSTOP), so the race is decided, not timed. Writer B runs the same command in this process and
must be refused at once: exit 2, one ``error:`` line naming A's pid and host, in under a second,
having written nothing. A then finishes, and what it leaves equals a clean solo run of the stage
(test_kill's reference), so the output is entirely one run's. A writer killed while it holds the
lock (SIGKILL: the kernel drops a flock) does not block the re-run, which again equals the clean run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cli_runner
import pytest
from faultlib import INJECT, differences, one_line_error, run_faulted, snapshot
from test_kill import STAGES, reference, stage_args  # noqa: F401 (reference is a fixture)

from rladctl.store.lock import lock_path


def start_writer(args: list[str]) -> subprocess.Popen:
    """The stage in a fresh process, with the fault suite's environment (so its outputs equal the reference)."""
    env = dict(
        os.environ, RLADCTL_QUIET="1", RLADCTL_FAULT="count", RLADCTL_FAULT_PARITY_REWARD="1", OMP_NUM_THREADS="1"
    )
    env.pop("RLADCTL_FAULT_LOG", None)
    return subprocess.Popen(
        [sys.executable, str(INJECT), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def wait_until_holding(writer: subprocess.Popen, out: Path, timeout: float = 120) -> dict:
    """The lock file's description of its holder, once ``writer`` holds the lock on ``out``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert writer.poll() is None, f"writer ended before it took the lock: {writer.stderr.read()}"
        try:
            holder = json.loads(lock_path(out).read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        if holder.get("pid") == writer.pid:
            return holder
        time.sleep(0.005)
    raise AssertionError(f"writer did not lock {out} within {timeout} s")


@pytest.mark.parametrize("stage", STAGES)
def test_a_second_writer_is_refused_and_the_output_is_entirely_the_first_ones(
    stage,
    models,
    shards,
    reference,  # noqa: F811 (test_kill's fixture)
    tmp_path,
):
    _, want, _ = reference(stage)
    args = stage_args(stage, models, shards, tmp_path)
    out = tmp_path / "out"
    first = start_writer(args)
    try:
        holder = wait_until_holding(first, out)
        os.kill(first.pid, signal.SIGSTOP)
        started = time.monotonic()
        second = cli_runner.run(args, env={"RLADCTL_QUIET": "1"})
        seconds = time.monotonic() - started
        lock_text = lock_path(out).read_text()
        os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        line = one_line_error(second.stderr)
        assert line is not None, second.stderr
        assert f"output {out} is being written by another rladctl process (pid {first.pid} on " in line
        assert socket.gethostname() in line and holder["command"].startswith(f"rladctl {stage}")
        assert seconds < 1.0, f"the refusal took {seconds:.2f} s"
        assert json.loads(lock_text)["pid"] == first.pid, "the refused writer must not touch the holder's lock"
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()
    assert not lock_path(out).exists(), "the holder removes its lock file when it is done"
    assert differences(snapshot(tmp_path), want) == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_lock_left_by_a_killed_writer_does_not_block_the_rerun(
    stage,
    models,
    shards,
    reference,  # noqa: F811 (test_kill's fixture)
    tmp_path,
):
    _, want, _ = reference(stage)
    args = stage_args(stage, models, shards, tmp_path)
    out = tmp_path / "out"
    first = start_writer(args)
    try:
        wait_until_holding(first, out)
    finally:
        first.kill()
        first.communicate()
    assert lock_path(out).exists(), "SIGKILL leaves the lock file behind: the point of this test"
    again = run_faulted(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert not lock_path(out).exists()
    assert differences(snapshot(tmp_path), want) == []
