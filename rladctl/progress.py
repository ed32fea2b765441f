"""Progress bars and logs on stderr through rich; stdout stays for the final summary."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    if not os.environ.get("RLADCTL_QUIET"):
        err_console.print(message)


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
