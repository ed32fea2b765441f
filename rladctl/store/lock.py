"""One writer per output (DESIGN §3): an exclusive lock held while a stage writes its output.

The lock is a hidden sibling of the output, ``.<name>.rladctl-lock``, locked with ``flock``: the
kernel drops the lock when its holder exits, however it exits, so a writer killed with SIGKILL never
blocks a re-run. The file names its holder (pid, host, command, start time) for the refusal, and is
removed by the holder when it is done. A sibling rather than a file inside: a checkpoint directory is
replaced whole by a rename, and an artifact directory stays exactly its parts and manifest.

Under torchrun only rank 0 takes it: every rank writes into the same output by design.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from rladctl.errors import ArtifactError
from rladctl.store.files import write_output_error

SUFFIX = ".rladctl-lock"


def lock_path(output: Path) -> Path:
    output = Path(output).absolute()
    return output.with_name(f".{output.name}{SUFFIX}")


@contextlib.contextmanager
def output_lock(output: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the write lock on ``output`` for the block; refuse at once when another process holds it.

    ``enabled=False`` (torchrun ranks other than 0) makes it a no-op.
    """
    if not enabled:
        yield
        return
    path = lock_path(Path(output))
    fd = _acquire(path, Path(output))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it: a waiting opener sees the file gone and retries
        os.close(fd)


@contextlib.contextmanager
def claim_output(output: str | Path, inputs: Mapping[str, str | Iterable[str]], enabled: bool = True) -> Iterator[None]:
    """What every stage does before it writes: refuse an output that is one of its inputs, then hold
    the output's lock for the block. ``inputs`` names each input (``{"model": cfg.model}``)."""
    refuse_own_input(output, inputs)
    with output_lock(output, enabled):
        yield


def refuse_own_input(output: str | Path, inputs: Mapping[str, str | Iterable[str]]) -> None:
    """One error line when ``output`` is an input or holds one: writing it would destroy that input.

    Names that are not local paths (hub ids) cannot be written over and pass.
    """
    out = _resolve(Path(output))
    for name, value in inputs.items():
        for given in [value] if isinstance(value, str | Path) else value:
            if not given or not Path(given).exists():
                continue
            path = _resolve(Path(given))
            if path == out or out in path.parents:
                raise ArtifactError(
                    f"output {output} is also an input of this command ({name} {given})",
                    None,
                    "writing it would destroy that input: choose another output directory",
                )


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symbolic-link loop (RuntimeError before Python 3.13)
        raise write_output_error(path, OSError(errno.ELOOP, os.strerror(errno.ELOOP))) from None


def _acquire(path: Path, output: Path) -> int:
    for _ in range(100):  # only loops while another holder removes the file under us
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # the output's directory cannot be written: say so about the output
            raise write_output_error(output, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ArtifactError(
                f"output {output} is being written by another rladctl process ({holder})",
                None,
                "wait for it to finish, or write to another output directory",
            ) from None
        except OSError:  # a file system without flock: go on unlocked rather than refuse every run
            return fd
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _describe(fd)
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it: take the new one
    raise ArtifactError(f"cannot lock output {output}", None, "re-run the command")


def _describe(fd: int) -> None:
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["rladctl", *sys.argv[1:]])[:200],
    }
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its holder is starting"
