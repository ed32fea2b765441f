"""The part driver: how rollout, score-teacher and eval write an artifact part by part (DESIGN §3, §6).

    parts = open_parts(out, kind, fingerprint, overwrite, num_parts)
    if parts.complete: ...                       # same inputs, already written: nothing to do
    run = parts.write(label, load, make_part)    # this rank's missing parts
    parts.finalize(backend=run.info.entry(), timings=run.timings, ...)

Under torchrun, part i belongs to rank i % world_size and every rank writes its own; rank 0 writes
the manifest once all parts exist. A part's rows depend only on its index, so any number of ranks
(and any number of resumes) writes the same bytes as one uninterrupted process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rladctl import distributed
from rladctl.progress import log, meter
from rladctl.store import schema as S
from rladctl.store.artifacts import ArtifactWriter, finalize_shared, open_writer

B = TypeVar("B")  # the backend a stage loads: a Generator or a Scorer


@dataclass
class PartsRun:
    """What ``Parts.write`` did, summed over ranks, for the manifest."""

    info: Any  # the backend's BackendInfo, from a rank that loaded it
    timings: dict[str, Any]


class Parts:
    """One artifact being written part by part (``open_parts`` opens it)."""

    def __init__(self, out: str, writer: ArtifactWriter, num_parts: int):
        self.out, self.writer, self.num_parts = out, writer, num_parts
        self.kept = len(writer.done)  # parts a killed run already wrote (their fingerprint matches)
        # This rank's share of the parts not yet written.
        self.missing = [i for i in range(num_parts) if i not in writer.done and distributed.owns(i)]

    @property
    def complete(self) -> bool:
        """The directory already holds this very artifact: nothing to write."""
        return self.writer.complete

    def write(
        self,
        label: str,
        load: Callable[[], B],
        make_part: Callable[[B, int, Callable[[int], None]], Any],
    ) -> PartsRun:
        """Write this rank's missing parts: ``make_part(backend, index, on_tokens)`` returns part
        ``index`` as a pyarrow Table (``on_tokens(n)`` shows progress within a part).

        ``load()`` runs only on a rank with parts to write, and on rank 0 when a killed run left
        every part but no manifest (the manifest names the backend). The backend is closed after.
        """
        backend = None
        if self.missing or (distributed.is_main() and self.kept >= self.num_parts):
            backend = load()
        tokens = 0
        started = time.perf_counter()
        try:
            with meter(f"{label} {Path(self.out).name}", total=len(self.missing)) as bar:
                for index in self.missing:
                    shown = bar.tokens
                    table = make_part(backend, index, lambda n: bar.advance(0, n))
                    self.writer.write_part(index, table)
                    part_tokens = completion_tokens(table)
                    tokens += part_tokens
                    bar.advance(1, part_tokens - (bar.tokens - shown))
            seconds = time.perf_counter() - started
        finally:
            if backend is not None:
                backend.close()  # a vLLM engine holds GPU memory and worker processes
        tokens, parts_written = (int(x) for x in distributed.all_reduce_floats([tokens, len(self.missing)]))
        seconds = distributed.all_reduce_float(seconds, "max")
        info = next(i for i in distributed.all_gather_objects(backend.info if backend is not None else None) if i)
        timings = {
            "seconds": round(seconds, 3),
            "completion_tokens": tokens,
            "parts_written": parts_written,
            "ranks": distributed.world_size(),
        }
        return PartsRun(info, timings)

    def finalize(self, **fields: Any) -> None:
        """Rank 0 writes the manifest (``fields`` plus the parts) once every rank's parts exist."""
        finalize_shared(self.writer, self.num_parts, **fields)


def open_parts(out: str, kind: str, fingerprint: str, overwrite: bool, num_parts: int) -> Parts:
    """Open ``out`` for an artifact of ``num_parts`` parts; see ``ArtifactWriter`` for the refusals."""
    parts = Parts(out, open_writer(Path(out), kind, fingerprint, overwrite), num_parts)
    if parts.complete:
        log(f"[green]{out} is already complete for these inputs; nothing to do")
    return parts


def completion_tokens(table) -> int:
    """Sampled tokens in a part: the rate the meter shows and the manifest's ``completion_tokens``."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(table[S.COMPLETION_TOKEN_IDS])).as_py() or 0)
