"""Run a CLI process without paying for its imports: a fork server for the tests that need a process.

Most CLI tests run the command inside the test process (tests/cli_runner.py). The rest need a
whole process: the fault tests patch the file system calls of the process they kill
(tests/faults/inject.py), and vLLM starts workers and holds GPU memory until its process ends.
Most of a tiny rladctl command's time in a new process is importing torch, transformers and
reasoning-gym (5-7 s on a CI core), and the fault tests start dozens. A server process imports
those libraries once and forks a child per command. The child is a whole process as a user runs
it: its own environment, working directory, argv, stdin from /dev/null, stdout and stderr to
files, its own exit status (-N when killed by signal N). The server only imports: it never runs a
torch op or starts a Python thread before forking.

What the server preloads is third-party only: rladctl, the stages and ``tests/faults/inject.py``
are imported fresh by each child, so inject.py patches them before they bind anything. A server
serves only the environment it was started with (``RLADCTL_*`` and ``PYTEST_*`` variables aside,
which are read at run time): a library may read the rest at import. ``run`` starts one server per such environment
(at most ``MAX_SERVERS``) and falls back to ``subprocess.run`` beyond that, where fork is not
available, or when ``RLADCTL_TEST_FORKSERVER=0``.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from cli_runner import exit_code

MAX_SERVERS = 3
PRELOAD = (
    "torch", "transformers", "transformers.modeling_utils", "safetensors.torch", "tokenizers",
    "pyarrow.parquet", "reasoning_gym", "math_verify", "typer", "rich.progress",
)  # fmt: skip
# Variables read at run time, not at import: a server serves any value. pytest renames
# PYTEST_CURRENT_TEST for every test.
RUNTIME_PREFIXES = ("RLADCTL_", "PYTEST_")
STATS: Counter = Counter()  # processes forked, started fresh, servers started (the suite's summary)


# --------------------------------------------------------------------------------------------
# the client (the pytest process)


def _import_env(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if not k.startswith(RUNTIME_PREFIXES)))


class _Server:
    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.buffer = b""
        self.usable = self._reply(timeout=300).get("ready", False)

    def _reply(self, timeout: float | None) -> dict:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(
                    f"the fork server exited with {self.proc.wait()}; RLADCTL_TEST_FORKSERVER=0 runs without it"
                )
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], env: dict[str, str], cwd: str | None, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            request = {"argv": argv, "env": env, "cwd": cwd or os.getcwd(), "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            pid = self._reply(timeout=60)["pid"]
            try:
                code = self._reply(timeout=timeout)["exit"]
            except TimeoutError:
                # The whole group: a command's own children (vLLM's engine and worker processes)
                # would otherwise outlive it, holding memory and CPU for the rest of the suite.
                os.killpg(pid, signal.SIGKILL)
                self._reply(timeout=60)
                raise subprocess.TimeoutExpired(
                    argv, timeout, out.read_text(errors="replace"), err.read_text(errors="replace")
                ) from None
            return subprocess.CompletedProcess(
                argv, code, out.read_text(errors="replace"), err.read_text(errors="replace")
            )

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_servers: dict[tuple, _Server | None] = {}


@atexit.register
def _close_all() -> None:
    for server in _servers.values():
        if server is not None:
            server.close()


def _server_for(env: dict[str, str]) -> _Server | None:
    key = _import_env(env)
    if key not in _servers and os.environ.get("RLADCTL_TEST_FORKSERVER", "1") != "0" and hasattr(os, "fork"):
        _servers[key] = _Server(env) if len([s for s in _servers.values() if s]) < MAX_SERVERS else None
        STATS["servers"] += _servers[key] is not None
    server = _servers.get(key)
    return server if server is not None and server.usable else None


def run(
    args: list[str], *, env: dict[str, str], cwd: str | None = None, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)``.

    ``args`` is ``["-m", module, ...]`` or ``[script.py, ...]``, as for the interpreter. ``fresh``:
    start a new interpreter all the same.
    """
    server = None if fresh else _server_for(env)
    if server is None:
        STATS["fresh"] += 1
        return subprocess.run(
            [sys.executable, *args], check=False, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
        )
    STATS["forked"] += 1
    return server.run(list(args), env, cwd, timeout)


# --------------------------------------------------------------------------------------------
# the server


def _child(request: dict, private: list[int]) -> None:
    """Become the requested process; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so that a timeout can stop everything it started
        for fd in private:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import runpy

        argv = request["argv"]
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:]]
                sys.path[0] = os.getcwd()
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(argv)
                sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exit_code(exc)
        except BaseException:  # noqa: BLE001 - as the interpreter does: print it, exit 1
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    requests = os.fdopen(os.dup(0), "r")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what an import prints must not reach the replies
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # No Python thread may run beside the fork. torch and pyarrow's jemalloc each leave one idle
    # native thread, as they do under every forking DataLoader; both guard their locks at fork.
    import threading

    ready = threading.active_count() == 1
    replies.write(json.dumps({"ready": ready}) + "\n")
    if not ready:
        return
    for line in requests:
        pid = os.fork()
        if pid == 0:
            _child(json.loads(line), [replies.fileno(), requests.fileno()])
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
