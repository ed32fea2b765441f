"""Run the rladctl CLI with one fault injected at the Nth file-system event.

    RLADCTL_FAULT=count         python inject.py ARGS   # run normally; list the events
    RLADCTL_FAULT=kill:N:before python inject.py ARGS   # SIGKILL just before event N
    RLADCTL_FAULT=kill:N:after  python inject.py ARGS   # ... just after it (a Parquet write is torn first)
    RLADCTL_FAULT=enospc:N      python inject.py ARGS   # event N (a write) fails: No space left on device
    RLADCTL_FAULT=erofs:N       python inject.py ARGS   # event N (a write) fails: Read-only file system

An *event* is one call that changes the file system: opening a file for writing, a Parquet, torch
or safetensors write, fsync, mkdir, rename/replace, unlink, rmtree. Counting them in a clean run
gives the points a fault can land on; a kill there is what a pre-emption at that instant leaves.
``RLADCTL_FAULT_LOG`` names a file that receives one line per event seen (written as they happen,
so a killed run's list is complete up to the kill). Only events under ``RLADCTL_FAULT_ROOT`` count
(default: everywhere), so caches that libraries write elsewhere do not shift the numbering.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import pathlib
import shutil
import signal
import sys

SPEC = os.environ.get("RLADCTL_FAULT", "count")
MODE, _, REST = SPEC.partition(":")
TARGET, _, WHEN = REST.partition(":")
TARGET = int(TARGET) if TARGET else 0
ERRNO = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}

_open = builtins.open
_log = _open(os.environ["RLADCTL_FAULT_LOG"], "a", buffering=1) if os.environ.get("RLADCTL_FAULT_LOG") else None
_count = 0
ROOT = os.path.realpath(os.environ.get("RLADCTL_FAULT_ROOT", "/"))


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _tear(path) -> None:
    """A write cut short: keep the first half of the file."""
    try:
        size = os.path.getsize(path)
        with _open(path, "r+b") as fh:
            fh.truncate(size // 2)
    except (OSError, TypeError):
        pass


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _resolve(path, dir_fd=None) -> str:
    if isinstance(path, int):  # fsync(fd)
        return _fd_path(path)
    try:
        path = os.fsdecode(path)
        if dir_fd is not None:  # shutil.rmtree unlinks names relative to an open directory
            path = os.path.join(_fd_path(dir_fd), path)
        return os.path.realpath(path)
    except (TypeError, ValueError):
        return "?"


def _event(name: str, path, writes: bool, dir_fd=None) -> bool:
    """Count one event; act if it is the target. True when the caller should kill after the call."""
    global _count
    path = _resolve(path, dir_fd)
    if not (path == ROOT or path.startswith(ROOT.rstrip("/") + "/")):
        return False
    _count += 1
    if _log:
        _log.write(f"{_count}\t{name}\t{path}\n")
    if _count != TARGET:
        return False
    if MODE == "kill":
        if WHEN == "before":
            _die()
        return True
    if MODE in ERRNO and writes:
        code = ERRNO[MODE]
        raise OSError(code, os.strerror(code), str(path))
    return False


def _wrap(name: str, original, *, path_arg: int = 0, writes: bool = True, torn: bool = False, only_if=None):
    def wrapper(*args, **kwargs):
        path = (
            args[path_arg]
            if len(args) > path_arg
            else kwargs.get("path", kwargs.get("file", kwargs.get("filename", "?")))
        )
        if only_if is not None and not only_if(*args, **kwargs):
            return original(*args, **kwargs)
        kill_after = _event(name, path, writes, kwargs.get("dir_fd"))
        result = original(*args, **kwargs)
        if kill_after:
            if torn:
                _tear(path)
            _die()
        return result

    wrapper.__wrapped__ = original
    return wrapper


def _writing(file, mode="r", *args, **kwargs) -> bool:
    return isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")


def install() -> None:
    opener = _wrap("open", _open, only_if=_writing)
    builtins.open = io.open = opener
    os.replace = _wrap("replace", os.replace)
    os.rename = _wrap("rename", os.rename)
    os.mkdir = _wrap("mkdir", os.mkdir)
    os.unlink = _wrap("unlink", os.unlink, writes=False)
    os.remove = _wrap("remove", os.remove, writes=False)
    os.fsync = _wrap("fsync", os.fsync)
    shutil.rmtree = _wrap("rmtree", shutil.rmtree, writes=False)
    pathlib.Path.write_text = _wrap("write_text", pathlib.Path.write_text)
    pathlib.Path.write_bytes = _wrap("write_bytes", pathlib.Path.write_bytes)

    import pyarrow.parquet as pq

    pq.write_table = _wrap("write_table", pq.write_table, path_arg=1, torn=True)

    import safetensors.torch
    import torch
    import transformers.modeling_utils as modeling_utils

    torch.save = _wrap("torch.save", torch.save, path_arg=1, torn=True)
    safetensors.torch.save_file = _wrap("save_file", safetensors.torch.save_file, path_arg=1, torn=True)
    if hasattr(modeling_utils, "safe_save_file"):
        modeling_utils.safe_save_file = _wrap("save_file", modeling_utils.safe_save_file, path_arg=1, torn=True)


def reward_by_parity() -> None:
    """An untrained tiny model never answers right: every reward 0, nothing trains. The fault tests
    reward the parity of the completion's length instead (as tests/test_train.py's shards do)."""
    import rladctl.tasks.catalog
    from rladctl.tasks.catalog import GymTask

    rladctl.tasks.catalog.extract_answer = lambda completion, prompt: completion or "-"
    GymTask.score = lambda self, metadata, extracted: float(len(extracted) % 2)


if __name__ == "__main__":
    install()
    if os.environ.get("RLADCTL_FAULT_PARITY_REWARD") == "1":
        reward_by_parity()
    from rladctl.cli import main

    sys.argv = ["rladctl", *sys.argv[1:]]
    main()
