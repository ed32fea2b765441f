"""Run the rladctl CLI inside the test process, and give back what its process would have shown.

``run(args)`` is ``python -m rladctl ARGS`` without the process: the same entry point, run by
``runpy`` as ``-m`` runs it (so the program name in messages is the same), and a
``subprocess.CompletedProcess`` with the exit code, stdout and stderr. What a new process would
get for free, the runner sets up by hand, and it undoes all of it afterwards:

- argv, the working directory and the environment (overrides on top of this process's);
- stdout and stderr are files on fd 1 and 2 (so what C code writes is caught too), stdin is
  /dev/null, and none is a terminal: rich draws no colour and redraws nothing, as in a subprocess;
- ``SystemExit`` gives its exit code; an uncaught exception prints its traceback and gives 1;
- a new process's view of the shared machinery: the warning filters the interpreter started with,
  printing to the run's stderr; no pytest capture handler on the root logger, so a library's
  warning reaches stderr; transformers' warn-once caches empty; the hub not yet probed;
- put back afterwards: signal handlers; torch's thread count, default dtype, grad mode,
  determinism and matmul precision; the RNGs (torch, CUDA, random, numpy); logger levels and
  handlers; the warnings registry; rladctl's process globals (the resident models, a process
  group it joined, the hub probe's cache and the hub's offline switch).

What it cannot give: a library reads much of its environment when first imported, which happened
in this process long before. Overrides reach what rladctl reads at run time (``RLADCTL_*``,
``COLUMNS``, the hub probe's ``HF_HUB_OFFLINE``). A test about import-time settings, process exit,
signals or a fresh interpreter starts a real process (tests/forkserver.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

STATS: Counter = Counter()  # runs in this process (the suite's summary)


def run(
    args: list[str], *, env: dict[str, str | None] | None = None, cwd: str | Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``rladctl ARGS`` in this process. ``env``: variables to set (None: to unset) for the run.

    Past ``timeout`` seconds the run is interrupted (the CLI's own Ctrl-C path) and
    ``subprocess.TimeoutExpired`` is raised with what it printed. A Ctrl-C at the keyboard stops
    the suite, as it does when the command is a child process.
    """
    STATS["in this process"] += 1
    argv = ["rladctl", *map(str, args)]
    output: dict[int, str] = {}
    with contextlib.ExitStack() as stack:
        for isolation in (
            _environment(env or {}),
            _directory(cwd),
            _signal_handlers(),
            _torch_state(),
            _random_state(),
            _rladctl_globals(),
            _stdio(output),
            _fresh_logging(),
            _fresh_warnings(),
        ):
            stack.enter_context(isolation)
        code, ended_by = _call(argv, timeout)
    if ended_by == "timeout":
        raise subprocess.TimeoutExpired(argv, timeout, output[1], output[2])
    if ended_by == "ctrl-c":
        raise KeyboardInterrupt
    return subprocess.CompletedProcess(argv, code, output[1], output[2])


def exit_code(exc: SystemExit) -> int:
    """The status a process exits with for this SystemExit (a message goes to stderr and gives 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _call(argv: list[str], timeout: float) -> tuple[int, str | None]:
    """``python -m rladctl`` with ``argv``: (exit code, "timeout" or "ctrl-c" when a SIGINT ended it)."""
    import _thread

    lock, state = threading.Lock(), {"running": True, "ended_by": None}

    def on_timeout() -> None:
        with lock:
            if state["running"]:
                state["ended_by"] = "timeout"
                _thread.interrupt_main()  # the CLI's KeyboardInterrupt path: one line, exit 130

    def on_sigint(signum, frame) -> None:
        state["ended_by"] = state["ended_by"] or "ctrl-c"
        signal.default_int_handler(signum, frame)

    # Signals reach the main thread only: elsewhere, no timeout and no Ctrl-C of our own.
    timer = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)  # put back by _signal_handlers
        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
    saved_argv, sys.argv = sys.argv, argv
    code = 1
    try:
        try:
            if timer is not None:
                timer.start()
            runpy.run_module("rladctl", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exit_code(exc)
        except Exception:  # noqa: BLE001 - as the interpreter does: print it, exit 1
            traceback.print_exc()
        finally:
            if timer is not None:
                timer.cancel()
            with lock:
                state["running"] = False
            sys.argv = saved_argv
    except KeyboardInterrupt:  # a SIGINT that landed just after the CLI returned: ended_by says whose
        pass
    return code, state["ended_by"]


# --------------------------------------------------------------------------------------------
# what a process would have had, and what must not leak out of the run


@contextlib.contextmanager
def _environment(overrides: dict[str, str | None]) -> Iterator[None]:
    saved = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextlib.contextmanager
def _directory(cwd: str | Path | None) -> Iterator[None]:
    saved = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in signal.valid_signals()}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


@contextlib.contextmanager
def _torch_state() -> Iterator[None]:
    import torch

    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    precision = torch.get_float32_matmul_precision()
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_float32_matmul_precision(precision)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


@contextlib.contextmanager
def _random_state() -> Iterator[None]:
    import random

    saved = random.getstate()
    numpy = sys.modules.get("numpy")
    saved_numpy = numpy.random.get_state() if numpy is not None else None
    try:
        yield
    finally:
        random.setstate(saved)
        if saved_numpy is not None:
            numpy.random.set_state(saved_numpy)


@contextlib.contextmanager
def _rladctl_globals() -> Iterator[None]:
    """What rladctl keeps for the life of its process."""
    import huggingface_hub.constants as hub_constants
    import torch.distributed as dist

    from rladctl import distributed, resident
    from rladctl.models import hub

    kept, offline = resident._active, hub_constants.HF_HUB_OFFLINE
    joined = dist.is_available() and dist.is_initialized()
    hub.offline_if_hub_unreachable.cache_clear()  # a new process probes the hub again
    try:
        yield
    finally:
        resident._active = kept
        hub.offline_if_hub_unreachable.cache_clear()
        hub_constants.HF_HUB_OFFLINE = offline  # the probe's switch (os.environ is put back by _environment)
        if dist.is_available() and dist.is_initialized() and not joined:
            import atexit

            dist.destroy_process_group()  # what distributed._shutdown does when the process exits
            atexit.unregister(distributed._shutdown)


@contextlib.contextmanager
def _stdio(output: dict[int, str]) -> Iterator[None]:
    """fd 1 and 2 onto files; sys.stdout, stderr and stdin as a process has them when none is a
    terminal; log handlers that wrote to this process's stdout or stderr write to the run's.
    ``output`` gets {1: stdout, 2: stderr} on the way out."""
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = sys.stdin, sys.stdout, sys.stderr
    saved_fds = {fd: os.dup(fd) for fd in files}
    progress = sys.modules.get("rladctl.progress")
    console = getattr(progress, "err_console", None)
    moved = []
    try:
        for fd, file in files.items():
            os.dup2(file.fileno(), fd)
        sys.stdin = open(os.devnull, encoding="utf-8")  # closed on the way out
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(
            2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
        )  # line-buffered, as Python's stderr always is
        moved = _point_handlers(
            {
                id(saved[1]): sys.stdout,
                id(sys.__stdout__): sys.stdout,
                id(saved[2]): sys.stderr,
                id(sys.__stderr__): sys.stderr,
            }
        )
        if console is not None:  # built at import, it decided then whether stderr is a terminal
            from rich.console import Console

            progress.err_console = Console(stderr=True, highlight=False)  # as rladctl/progress.py builds it
        yield
    finally:
        try:
            for handler, stream in moved:
                handler.setStream(stream)
            if console is not None:
                progress.err_console = console
            ours = [s for s in (sys.stdin, sys.stdout, sys.stderr) if s not in saved]
            sys.stdin, sys.stdout, sys.stderr = saved
            for stream in ours:
                with contextlib.suppress(Exception):
                    stream.close()  # flushes
            _flush_c_stdio()
        finally:
            for fd, saved_fd in saved_fds.items():
                os.dup2(saved_fd, fd)
                os.close(saved_fd)
            for fd, file in files.items():
                file.seek(0)
                output[fd] = file.read().decode("utf-8", errors="replace")
                file.close()


def _point_handlers(streams: dict[int, object]) -> list[tuple[logging.StreamHandler, object]]:
    """Point every plain StreamHandler whose stream is a key of ``streams`` (by id) at its value;
    (handler, old stream) pairs. transformers' handler, for one, holds the stderr it met at import."""
    moved = []
    for logger in _loggers():
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and id(handler.stream) in streams:
                moved.append((handler, handler.setStream(streams[id(handler.stream)])))
    return moved


def _loggers() -> list[logging.Logger]:
    named = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(x for x in named if isinstance(x, logging.Logger))]


def _flush_c_stdio() -> None:
    """What C code printed through stdio and its buffers still hold belongs to this run."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    """No handler on the root logger (pytest's capture handlers off), so that a warning from a
    library without a handler reaches stderr through logging.lastResort, as in a new process;
    transformers' warn-once caches empty; levels and handlers put back afterwards."""
    loggers = _loggers()
    saved = [(x, x.level, x.disabled, x.propagate, list(x.handlers)) for x in loggers]
    disabled = logging.root.manager.disable
    logging.getLogger().handlers = []
    utils = sys.modules.get("transformers.utils.logging")
    for name in ("warning_once", "info_once"):
        with contextlib.suppress(AttributeError):
            getattr(utils, name).cache_clear()
    try:
        yield
    finally:
        for logger, level, was_disabled, propagate, handlers in saved:
            logger.setLevel(level)
            logger.disabled, logger.propagate, logger.handlers = was_disabled, propagate, handlers
        logging.disable(disabled)


@contextlib.contextmanager
def _fresh_warnings() -> Iterator[None]:
    """The filters the interpreter started with (pytest's are its own), printing to the run's
    stderr; warnings already shown once in this process are shown again."""
    import _warnings  # its ``filters`` is the list the interpreter started with: pytest swaps in copies

    once = dict(warnings.onceregistry)
    warnings.onceregistry.clear()
    with warnings.catch_warnings():  # entering makes every module's registry stale
        warnings.filters[:] = _warnings.filters
        warnings.showwarning = _print_warning
        try:
            yield
        finally:
            warnings.onceregistry.clear()
            warnings.onceregistry.update(once)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    with contextlib.suppress(OSError):
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))
