"""Progress bars and logs on stderr through rich; stdout stays for the final summary."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    """One line to stderr; wrapped to the terminal's width, and not at all when stderr is a file or pipe."""
    if not os.environ.get("RLADCTL_QUIET"):
        err_console.print(message, soft_wrap=not err_console.is_terminal)


class Meter:
    """A rich progress bar whose description shows a live tokens/s rate."""

    def __init__(self, progress, task_id, unit: str):
        self.progress, self.task_id, self.unit = progress, task_id, unit
        self.tokens = 0
        self.start = time.perf_counter()

    def advance(self, steps: int = 1, tokens: int = 0) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task_id, advance=steps, rate=f"{rate:,.0f} {self.unit}")


@contextlib.contextmanager
def meter(description: str, total: int, unit: str = "tok/s") -> Iterator[Meter]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    disable = bool(os.environ.get("RLADCTL_QUIET"))
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, disable=disable, transient=False) as progress:
        task_id = progress.add_task(description, total=total, rate="")
        yield Meter(progress, task_id, unit)


def clock(seconds: float) -> str:
    """``h:mm:ss``, like rich's elapsed and remaining columns."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_line(
    done: int, total: int, elapsed_s: float, eta_s: float | None, reward: float | None, mean_at_k: float | None, K: int
) -> str:
    """The overall line of `rladctl run`: ``-`` stands for what is not known yet."""
    return " · ".join(
        [
            f"run: iteration {done}/{total}",
            f"elapsed {clock(elapsed_s)}",
            f"ETA {'-' if eta_s is None else clock(eta_s)}",
            f"reward {'-' if reward is None else f'{reward:.3f}'}",
            f"Mean@{K} {'-' if mean_at_k is None else f'{mean_at_k:.3f}'}",
        ]
    )


class RunStatus:
    """What the overall line of `rladctl run` shows; rendered afresh at each refresh, so the clocks tick.

    The ETA spreads the iterations still to come at the mean pace of those finished in this
    process, less the time the current one has run (iterations a resumed run skips count as fast).
    """

    def __init__(self, total: int, K: int, clock_fn=time.perf_counter):
        self.total, self.K, self.clock_fn = total, K, clock_fn
        self.started = clock_fn()
        self.current = 0  # the iteration under way, 1-based (0: none yet)
        self.finished, self.finished_at = 0, 0.0  # iterations finished in this process, when the last did
        self.left = total  # iterations after the last one finished
        self.reward: float | None = None
        self.mean_at_k: float | None = None

    def start(self, i: int) -> None:
        self.current = i + 1

    def finish(self, i: int, reward: float | None) -> None:
        self.finished, self.finished_at, self.left, self.reward = (
            self.finished + 1,
            self.clock_fn(),
            self.total - i - 1,
            reward,
        )

    def line(self) -> str:
        now = self.clock_fn()
        eta = None
        if self.finished:
            pace = (self.finished_at - self.started) / self.finished
            eta = max(0.0, pace * self.left - (now - self.finished_at))
        return run_line(self.current, self.total, now - self.started, eta, self.reward, self.mean_at_k, self.K)

    def __rich__(self) -> str:
        return f"[bold]{self.line()}[/bold]"


@contextlib.contextmanager
def status_line(status: RunStatus) -> Iterator[RunStatus]:
    """Keep ``status`` on one line above the stage bars (which nest below it) while the block runs.

    Quiet like the bars when RLADCTL_QUIET is set and on ranks other than 0, and left out when stderr
    is not a terminal (a log file gets the bars' final lines and the per-iteration log lines) or rich
    cannot nest live displays.
    """
    from rich.live import Live

    from rladctl import distributed

    nests = hasattr(err_console, "_live_stack")  # rich >= 14.1 renders a Live started inside another
    quiet = os.environ.get("RLADCTL_QUIET") or not distributed.is_main()  # before a stage's init quiets the rest
    if quiet or not err_console.is_terminal or not nests:
        yield status
        return
    with Live(status, console=err_console, transient=True, refresh_per_second=2):
        yield status
