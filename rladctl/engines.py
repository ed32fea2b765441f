"""Inference engines that `rladctl run` builds once and keeps for the whole run (DESIGN §5).

A vLLM engine takes 30 s to minutes to start, and the loop would otherwise start two per
iteration (rollout, score-teacher) and one per evaluation. Within ``keep_engines()``,
``backends.load_generator`` / ``load_scorer`` ask here first for a backend whose record is
``keepable``:

- the student's engine is kept under its engine keys and its architecture (config and tokenizer
  files); every rollout and evaluation of the run borrows it. When train has written a checkpoint,
  train hands its model here (``trained``) and the new weights go into the engine in place, through
  vLLM's own loader in each worker; no file is read back. A request for weights the engine does not
  hold (a resumed run's first checkpoint, a model evaluated beside the student) loads that
  directory's safetensors into it, read by the workers.
- the teacher's engine (scoring, or sampling where the objective's record says the teacher samples)
  is kept under its path and never reloaded.
- ``sleep()`` (before train) lets every engine give the device to train where vLLM has sleep
  mode (GPUs): the teacher offloads its weights to CPU memory, the student drops its own (new ones
  arrive after train); both drop the KV cache. Borrowing wakes an engine again.

A stage's ``close()`` on a borrowed engine leaves it running; the engines stop when the block ends.
Every artifact is written all the same, so a fresh process (a resumed run) builds them again from
the files on disk. ``builds`` counts the engines built in the block (tests pin it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl.progress import log
from rladctl.resident import stamp

_active: Keeper | None = None

# Files that decide what an engine computes besides its weights; keys that change between a model
# and a checkpoint trained from it without changing the architecture are left out of config.json.
_ARCH_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
_TOKENIZER_KEYS = ("eos_token", "bos_token", "pad_token", "added_tokens_decoder")
_VOLATILE_KEYS = ("transformers_version", "torch_dtype", "dtype", "_name_or_path", "architectures_version")


@dataclass
class Kept:
    engine: Any  # the backend's Generator or Scorer, loaded with kept=True
    weights: tuple | None  # (directory, stamp) of the weights it holds; None once dropped by sleep
    frozen: bool  # a teacher: never takes trained weights, keeps its own while asleep


class Borrowed:
    """A kept engine as a stage sees it: everything but ``close``, which leaves it running."""

    def __init__(self, engine: Any):
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def close(self) -> None:
        return None


class Keeper:
    """The engines of one run, by role, engine keys and model (see the module docstring)."""

    def __init__(self, frozen: tuple[str, ...] = ()):
        self.kept: dict[tuple, Kept] = {}
        self.builds = 0  # engines built in this block
        self.frozen = {_resolved(m) for m in frozen if m}

    def generator(self, engine_cfg, model: str, build: Callable[[], Any]) -> Borrowed:
        """A sampling engine for ``model``: the kept one (with ``model``'s weights loaded into it if
        it holds others), or ``build()`` once."""
        if _resolved(model) in self.frozen:
            return self._frozen(("generator", _engine_key(engine_cfg), _resolved(model)), model, build)
        key = ("generator", _engine_key(engine_cfg), architecture(model))
        kept, wanted = self.kept.get(key), weights_id(model)
        if kept is None:
            self.kept[key] = Kept(self._build(model, build), wanted, frozen=False)
            return Borrowed(self.kept[key].engine)
        if kept.weights != wanted:
            kept.engine.wake(("weights",))
            started = time.perf_counter()
            kept.engine.load_weights_from(str(_resolved(model)))
            kept.weights = wanted
            log(f"loaded {model} into the kept vLLM engine ({time.perf_counter() - started:.1f} s)")
        kept.engine.wake()
        return Borrowed(kept.engine)

    def scorer(self, engine_cfg, model: str, params: Any, build: Callable[[], Any]) -> Borrowed:
        """The teacher's scoring engine: built once, never reloaded."""
        return self._frozen(("scorer", _engine_key(engine_cfg), _resolved(model), repr(params)), model, build)

    def trained(self, directory: str | Path, model: Any) -> int:
        """Train wrote ``directory`` from ``model`` (same values): its weights go into every kept
        student engine of that architecture, in place. Returns how many engines took them."""
        arch, took = architecture(str(directory)), 0
        for key, kept in self.kept.items():
            if kept.frozen or key[0] != "generator" or key[2] != arch:
                continue
            started = time.perf_counter()
            kept.engine.wake(("weights",))
            kept.engine.load_weights(list(model.state_dict().items()))
            kept.weights = weights_id(str(directory))
            took += 1
            log(f"new weights into the kept vLLM engine in place ({time.perf_counter() - started:.1f} s)")
        return took

    def sleep(self) -> None:
        """Train needs the device: every engine sleeps where its backend can (see the module docstring)."""
        for kept in self.kept.values():
            kept.engine.sleep(keep_weights=kept.frozen)
            if not kept.frozen and kept.engine.sleeping:
                kept.weights = None

    def close(self) -> None:
        for kept in self.kept.values():
            with contextlib.suppress(Exception):  # an engine that died has nothing left to stop
                kept.engine.close()
        self.kept.clear()

    def _frozen(self, key: tuple, model: str, build: Callable[[], Any]) -> Borrowed:
        kept = self.kept.get(key)
        if kept is None:
            kept = self.kept[key] = Kept(self._build(model, build), weights_id(model), frozen=True)
        kept.engine.wake()
        return Borrowed(kept.engine)

    def _build(self, model: str, build: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        engine = build()
        self.builds += 1
        log(f"started a vLLM engine for {model} in {time.perf_counter() - started:.0f} s; it serves the whole run")
        return engine


def active() -> Keeper | None:
    return _active


@contextlib.contextmanager
def keep_engines(
    enabled: bool = True, frozen: tuple[str, ...] = (), log_dir: str | Path | None = None
) -> Iterator[Keeper | None]:
    """Within this block, keepable backends' engines are built once and kept (module docstring);
    ``frozen``: the teacher's paths; ``log_dir``: where vLLM's log goes (``vllm_log``)."""
    global _active
    previous, keeper = _active, Keeper(frozen) if enabled else None
    _active = keeper
    try:
        with vllm_log(log_dir) if (enabled and log_dir) else contextlib.nullcontext():
            yield keeper
    finally:
        _active = previous
        if keeper is not None:
            keeper.close()


def trained(directory: str | Path, model: Any) -> None:
    """Train's hook: a checkpoint is complete; kept engines take its weights (a no-op outside a run)."""
    if _active is not None:
        _active.trained(directory, model)


def sleep() -> None:
    """The loop's hook before train: kept engines give the device back (a no-op outside a run)."""
    if _active is not None:
        _active.sleep()


# --------------------------------------------------------------------------------------------
# identities


def _resolved(model: str) -> str:
    from rladctl.models.hub import locate

    source = locate(model)
    return str(source.resolve()) if isinstance(source, Path) else source


def weights_id(model: str) -> tuple:
    """Which weights ``model`` names now: its directory and the stamp of its files (hub ids: the id)."""
    path = _resolved(model)
    return (path, stamp(Path(path)) if os.path.isdir(path) else ())


def architecture(model: str) -> str:
    """A hash of what an engine computes besides its weights: config (less the keys a save
    rewrites), generation config and tokenizer files. A hub id is its own architecture."""
    path = _resolved(model)
    if not os.path.isdir(path):
        return path
    digest = hashlib.sha256()
    for name in _ARCH_FILES:
        file = Path(path) / name
        if not file.is_file():
            continue
        data = file.read_bytes()
        if name == "config.json":
            config = {k: v for k, v in json.loads(data).items() if k not in _VOLATILE_KEYS}
            data = json.dumps(config, sort_keys=True).encode()
        elif name == "tokenizer_config.json":  # a save rewrites its class name; the stop tokens count
            config = {k: v for k, v in json.loads(data).items() if k in _TOKENIZER_KEYS}
            data = json.dumps(config, sort_keys=True).encode()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _engine_key(engine_cfg) -> tuple:
    """The engine keys of a stage table (backend, dtype, device, vLLM options) as a hashable key."""
    return tuple(sorted((k, repr(v)) for k, v in engine_cfg.engine().items()))


# --------------------------------------------------------------------------------------------
# vLLM's log


@contextlib.contextmanager
def vllm_log(directory: str | Path) -> Iterator[Path | None]:
    """vLLM's log lines (dozens per engine start) go to ``directory/vllm.log``; errors still reach
    the terminal. Left alone when the user configured vLLM's logging (VLLM_LOGGING_CONFIG_PATH,
    VLLM_LOGGING_LEVEL or VLLM_CONFIGURE_LOGGING) or set RLADCTL_VLLM_LOG=terminal. vLLM reads this
    when it is first imported, and its worker processes inherit it."""
    mine = ("VLLM_LOGGING_CONFIG_PATH", "VLLM_LOGGING_LEVEL", "VLLM_CONFIGURE_LOGGING")
    if os.environ.get("RLADCTL_VLLM_LOG") == "terminal" or any(k in os.environ for k in mine):
        yield None
        return
    log_file = Path(directory) / "vllm.log"
    config_file = Path(directory) / ".vllm-logging.json"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain", "level": "INFO"},
            "terminal": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "level": "ERROR"},
        },
        "loggers": {"vllm": {"handlers": ["file", "terminal"], "level": "INFO", "propagate": False}},
    }
    Path(directory).mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)
    try:
        yield log_file
    finally:
        for key in ("VLLM_CONFIGURE_LOGGING", "VLLM_LOGGING_CONFIG_PATH"):
            os.environ.pop(key, None)
