"""Models that `rladctl run` keeps in memory between its stages and iterations.

Every stage still reads and writes its artifacts on disk, and a fresh process (a resumed run, a
stage run alone) always loads from there. Inside one `rladctl run`, though, the teacher would be
loaded again every iteration, and the student that train just saved would be read back twice, by
the next rollout and the next train. Within ``keep_models()``, ``models.load_model`` first asks
here: a model is kept under (directory, dtype, device) with a stamp of the directory's files, and
is handed out again only while the files are those it was kept with.

A request in another dtype or on another device than the kept model's (train hands on its float32
student; a GPU rollout samples in bfloat16) gets a copy made from the kept one (``copy_as``): its
parameters cast, its buffers as they are, since from_pretrained(dtype=...) leaves buffers that no
state dict holds (rotary frequencies) in float32 where ``model.to(dtype)`` would round them. The
copy equals what from_pretrained would load from the directory (tests/test_resident.py).

Every rank of a torchrun keeps its own models. Models on a GPU are kept only where ``on_device``
allows it: `rladctl run` turns that off when a stage's backend reserves GPU memory for its own
engine (vLLM), which would find the memory taken.

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

    def __init__(self, limit: int = 3, on_device: bool = False):
        self.limit, self.on_device = limit, on_device
        self.models: OrderedDict[tuple, tuple[tuple, Any]] = OrderedDict()  # key -> (stamp, model)
        self.states: dict[str, tuple[tuple, dict]] = {}  # directory -> (stamp, training state)
        self.tokenizers: dict[tuple, Any] = {}  # (digest of the tokenizer files, trust) -> tokenizer

    def tokenizer(self, path: Path, files: tuple[str, ...], trust_remote_code: bool, load):
        """The tokenizer of ``path``: one loaded earlier from the same bytes of its ``files`` (each checkpoint
        copies its tokenizer's files, so one load serves every iteration), else ``load()``.
        Shared, not copied: nothing in rladctl changes a loaded tokenizer."""
        import hashlib

        digest = hashlib.sha256()
        for name in files:
            with contextlib.suppress(OSError):
                data = (Path(path) / name).read_bytes()
                digest.update(f"{name}:{len(data)}:".encode() + data)
        key = (digest.hexdigest(), trust_remote_code)
        if key not in self.tokenizers:
            self.tokenizers[key] = load()
        return self.tokenizers[key]

    def get(self, path: Path, dtype, device: str, for_training: bool):
        path = Path(path).resolve()
        key = (str(path), str(dtype), device)
        kept = self.models.get(key)
        if kept is not None and kept[0] != stamp(path):
            del self.models[key]  # the directory was rewritten since
            kept = None
        if kept is None:
            kept = self._copy(key, for_training)
        if kept is None:
            return None
        if for_training:  # training changes it: nobody may get it as the directory's again
            for other in [k for k in self.models if k[0] == key[0]]:
                del self.models[other]  # nor the same weights in another dtype: the run has moved past them
            return kept[1].train()
        self.models.move_to_end(key)
        return kept[1].eval()

    def _copy(self, key: tuple, for_training: bool) -> tuple | None:
        """The same directory's weights kept in another dtype or on another device, copied as ``key`` asks."""
        import torch

        if for_training:  # train loads float32 from disk or takes what it handed on: never a copy
            return None
        now = stamp(Path(key[0]))
        # Only from float32 (or the same dtype): a cast up from bfloat16 would not give back what the
        # directory holds. from_pretrained casts the saved tensors; so does copy_as, from float32.
        exact = ("torch.float32", key[1])
        same = [k for k, (s, _) in self.models.items() if k[0] == key[0] and s == now and k[1] in exact]
        if not same or not self.keeps(key[2]):
            return None
        source = next((k for k in same if k[2] == key[2]), same[-1])
        stamp_, model = self.models[source]
        self.models[key] = kept = (stamp_, copy_as(model, getattr(torch, key[1].removeprefix("torch.")), key[2]))
        self._evict(keep=(key, source))
        return kept

    def keeps(self, device: str) -> bool:
        return on_cpu(device) or self.on_device

    def put(self, path: Path, dtype, device: str, model) -> None:
        if not self.keeps(device):
            return
        path = Path(path).resolve()
        key = (str(path), str(dtype), device)
        self.models[key] = (stamp(path), model)
        self._evict(keep=(key,))

    def _evict(self, keep: tuple) -> None:
        for key in list(self.models):
            if len(self.models) <= self.limit:
                return
            if key not in keep:
                del self.models[key]

    def take_state(self, path: Path) -> dict | None:
        path = Path(path).resolve()
        kept = self.states.pop(str(path), None)
        return kept[1] if kept is not None and kept[0] == stamp(path) else None


def on_cpu(device: str) -> bool:
    return str(device).split(":")[0] == "cpu"


def copy_as(model, dtype, device: str):
    """``model`` with its parameters cast to ``dtype`` on ``device``, its buffers left in their dtype
    (as from_pretrained(dtype=...) leaves them); tied parameters stay tied. For sampling: no grad."""
    import copy

    import torch

    memo = {}
    for p in model.parameters():  # deduplicated: a tied head is one entry
        memo[id(p)] = torch.nn.Parameter(p.detach().to(device=device, dtype=dtype), requires_grad=False)
    out = copy.deepcopy(model, memo).to(device)  # buffers only move
    out.config.dtype = dtype
    return out.eval()


def active() -> Resident | None:
    return _active


@contextlib.contextmanager
def keep_models(enabled: bool = True, limit: int = 3, on_device: bool = False) -> Iterator[Resident | None]:
    """Within this block, ``load_model`` reuses models kept here (see the module docstring);
    ``on_device``: models on a GPU are kept too, not only those on the CPU."""
    global _active
    previous, _active = _active, Resident(limit, on_device) if enabled else None
    try:
        yield _active
    finally:
        _active = previous


def hand_on(path: Path, model, dtype, device: str, training_state: dict) -> None:
    """Train's final model and optimizer state, for the next stages of this run; a no-op outside one."""
    if _active is None or not _active.keeps(device):
        return
    path = Path(path).resolve()
    _active.put(path, dtype, device, model)
    _active.states[str(path)] = (stamp(path), training_state)


def keeps_on(device: str) -> bool:
    """Whether models on ``device`` stay in memory here (False outside ``keep_models``)."""
    return _active is not None and _active.keeps(device)


def has_training_state(path: str | Path) -> bool:
    return _active is not None and str(Path(path).resolve()) in _active.states


def take_training_state(path: str | Path) -> dict | None:
    return None if _active is None else _active.take_state(Path(path))
