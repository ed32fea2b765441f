"""One writer per output: the lock of rladctl/store/lock.py (DESIGN §3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rladctl.errors import ArtifactError
from rladctl.store.lock import lock_path, output_lock

HOLD = """
import sys, time
from rladctl.store.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_child(out):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out), "--out", str(out)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_at_once_with_the_holder_named(tmp_path):
    out = tmp_path / "rollouts"
    child = hold_in_child(out)
    try:
        started = time.monotonic()
        with pytest.raises(ArtifactError) as exc, output_lock(out):
            pass
        assert time.monotonic() - started < 1.0
        line = exc.value.line()
        assert f"output {out} is being written by another rladctl process (pid {child.pid} on " in line
        assert "--out" in line and "wait for it to finish, or write to another output directory" in line
    finally:
        child.kill()
        child.wait()


def test_a_killed_holder_does_not_block_and_a_released_lock_leaves_no_file(tmp_path):
    out = tmp_path / "ckpt"
    child = hold_in_child(out)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock_path(out).exists()  # the dead holder could not remove it
    with output_lock(out):
        assert lock_path(out).exists()
    assert not lock_path(out).exists()
    assert not out.exists()  # the lock never creates the output itself


def test_one_process_takes_it_again_after_release_and_refuses_it_while_held(tmp_path):
    out = tmp_path / "x"
    with output_lock(out):
        with pytest.raises(ArtifactError, match="is being written by another rladctl process"), output_lock(out):
            pass
    with output_lock(out), output_lock(tmp_path / "y"):  # other outputs are independent
        pass
    with output_lock(out, enabled=False), output_lock(out, enabled=False):
        pass
