"""Models that `rladctl run` keeps in memory between its stages and iterations.

Every stage still reads and writes its artifacts on disk, and a fresh process (a resumed run, a
stage run alone) always loads from there. Inside one `rladctl run`, though, the teacher would be
loaded again every iteration, and the student that train just saved would be read back twice, by
the next rollout and the next train. Within ``keep_models()``, ``models.load_model`` first asks
here: a model is kept under (directory, dtype, device) with a stamp of the directory's files, and
is handed out again only while the files are those it was kept with. Only an exact match counts:
a float32 model is not cast to serve a bfloat16 request, since from_pretrained(dtype=...) also
decides the dtype of buffers that no state dict holds (rotary frequencies, for one).

Only models on the CPU are kept. On a GPU the memory they would hold (the student's float32
weights and AdamW state, the teacher) belongs to the next stage: vLLM, for one, claims a fraction
of the whole GPU when it starts.

Two rules keep this exact. A model given out for training is *taken* (it will change), never
shared; and train gives back what it trained, with its optimizer state, only after the checkpoint
holding the very same values is complete on disk.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_active: Resident | None = None

# The files whose (name, size, mtime) say a kept model still equals its directory.
_STAMPED = ("config.json", "model.safetensors", "model.safetensors.index.json", "_manifest.json", "manifest.json")


def stamp(path: Path) -> tuple:
    found = []
    for name in _STAMPED:
        with contextlib.suppress(OSError):
            st = os.stat(Path(path) / name)
            found.append((name, st.st_size, st.st_mtime_ns))
    return tuple(found)


class Resident:
    """At most ``limit`` frozen models (least recently used go first), plus trained ones handed on."""

    def __init__(self, limit: int = 3):
        self.limit = limit
        self.models: OrderedDict[tuple, tuple[tuple, Any]] = OrderedDict()  # key -> (stamp, model)
        self.states: dict[str, tuple[tuple, dict]] = {}  # directory -> (stamp, training state)

    def get(self, path: Path, dtype, device: str, for_training: bool):
        path = Path(path).resolve()
        key = (str(path), str(dtype), device)
        kept = self.models.get(key)
        if kept is not None and kept[0] != stamp(path):
            del self.models[key]  # the directory was rewritten since
            kept = None
        if kept is None:
            return None
        if for_training:  # training changes it: nobody may get it as the directory's again
            for other in [k for k in self.models if k[0] == key[0]]:
                del self.models[other]  # nor the same weights in another dtype: the run has moved past them
            return kept[1].train()
        self.models.move_to_end(key)
        return kept[1].eval()

    def put(self, path: Path, dtype, device: str, model) -> None:
        if not on_cpu(device):
            return
        path = Path(path).resolve()
        self.models[(str(path), str(dtype), device)] = (stamp(path), model)
        while len(self.models) > self.limit:
            self.models.popitem(last=False)

    def take_state(self, path: Path) -> dict | None:
        path = Path(path).resolve()
        kept = self.states.pop(str(path), None)
        return kept[1] if kept is not None and kept[0] == stamp(path) else None


def on_cpu(device: str) -> bool:
    return str(device).split(":")[0] == "cpu"


def active() -> Resident | None:
    return _active


@contextlib.contextmanager
def keep_models(enabled: bool = True, limit: int = 3) -> Iterator[Resident | None]:
    """Within this block, ``load_model`` reuses models kept here (see the module docstring)."""
    global _active
    previous, _active = _active, Resident(limit) if enabled else None
    try:
        yield _active
    finally:
        _active = previous


def hand_on(path: Path, model, dtype, device: str, training_state: dict) -> None:
    """Train's final model and optimizer state, for the next stages of this run; a no-op outside one."""
    if _active is None or not on_cpu(device):
        return
    path = Path(path).resolve()
    _active.put(path, dtype, device, model)
    _active.states[str(path)] = (stamp(path), training_state)


def has_training_state(path: str | Path) -> bool:
    return _active is not None and str(Path(path).resolve()) in _active.states


def take_training_state(path: str | Path) -> dict | None:
    return None if _active is None else _active.take_state(Path(path))
