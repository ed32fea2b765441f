"""Atomic file I/O shared by artifacts, checkpoints and reports.

Every file goes to a hidden temporary sibling, is fsynced, and is renamed into place, so a reader
never sees half a file; a failed write is the one-line ``cannot write PATH (reason)`` error.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rladctl.errors import ArtifactError, ModelError, RladError

TMP_MARK = ".tmp-"


def is_temporary(path: Path) -> bool:
    return TMP_MARK in path.name


def tmp_path(path: Path) -> Path:
    # Dot-prefixed: Parquet readers (pyarrow datasets, duckdb and polars globs) skip hidden files.
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills a hidden temporary sibling, which is fsynced and renamed to ``path``: a
    reader sees the old file or the new one, never half of one. A failed write removes the
    temporary and is the one-line ``cannot write`` error naming ``path``."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write`` of ``data``; a temporary sibling that a killed writer left is removed first."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}{TMP_MARK}*"):
        if not writer_alive(stale):
            stale.unlink(missing_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, canonical_json(obj).encode())


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


# What to do about a failed write, by its cause; anything else gets the full-disk advice.
_WRITE_FIXES = {
    errno.ENOTDIR: "a file stands where a directory is needed: choose another output directory",
    errno.EEXIST: "a file stands where a directory is needed: choose another output directory",
    errno.EISDIR: "a directory stands where a file is needed: choose another output directory",
    errno.ELOOP: "the path runs through a symbolic-link loop: fix the link or choose another output directory",
    errno.ENAMETOOLONG: "choose a shorter output path",
    errno.EACCES: "choose an output directory you may write to",
    errno.EPERM: "the directory or file is protected (immutable or not yours): choose another output directory",
    errno.EROFS: "the file system is read-only: choose a writable output directory, then re-run to resume",
}


def write_output_error(path: Path, exc: OSError) -> ArtifactError:
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__)
    fix = _WRITE_FIXES.get(exc.errno, "free disk space or choose a writable output directory, then re-run to resume")
    return ArtifactError(f"cannot write {path} ({reason})", None, fix)


def make_dir(path: Path) -> Path:
    """``mkdir -p``; a failure is the one-line ``cannot write`` error."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_output_error(Path(path), exc) from None
    return Path(path)


def write_failure(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write, also when a library wrapped it (safetensors, torch.save)."""
    if isinstance(exc, RladError):  # already one line saying what to fix (MissingPathError is an OSError too)
        return None
    if isinstance(exc, OSError):
        return exc
    text = str(exc)
    if match := re.search(r"os error (\d+)", text):  # safetensors: "I/O error: ... (os error 28)"
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    if re.search(r"PytorchStreamWriter failed|file write failed|unexpected pos", text):  # torch.save keeps no errno
        return OSError(errno.EIO, "write failed; is the disk full?")
    return None


@contextmanager
def writing(path: Path):
    """Inside the block, a failed write becomes the one-line error naming ``path``."""
    try:
        yield
    except Exception as exc:
        failure = write_failure(exc)
        if failure is None:
            raise
        raise write_output_error(path, failure) from None


def writer_alive(tmp: Path) -> bool:
    """Temporary names end in the writer's pid; another live rank's file must be left alone."""
    try:
        pid = int(tmp.name.rsplit(TMP_MARK, 1)[1])
    except (IndexError, ValueError):
        return False
    return pid != os.getpid() and pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing; corrupt JSON is a ModelError."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON", fix="restore or rewrite the file") from exc
