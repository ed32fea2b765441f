"""Sampling and scoring backends (DESIGN §5): a factory per role, and what the stages may ask first.

Every name of ``config.BackendName`` is one module here (``hf``, ``vllm``) whose ``BACKEND`` record
loads its ``Generator`` and ``Scorer`` (see ``base``). Adding a backend is one module plus its name
in ``config.BackendName``; no stage changes, since stages ask the record and never compare a name.

    generator = load_generator(cfg, cfg.model, batch_size=cfg.batch_size, seed=cfg.seed)
    samples = generator.generate(prompt_ids, SamplingParams(temperature=0.7, max_new_tokens=256))
"""

from __future__ import annotations

import dataclasses
import importlib
import typing

from rladctl import distributed, engines
from rladctl.backends.base import (
    Backend,
    BackendInfo,
    Generator,
    Sample,
    SamplingParams,
    Scorer,
    ScoringParams,
    TopK,
)
from rladctl.config import BackendName, EngineConfig
from rladctl.errors import ConfigError, MissingDependencyError

__all__ = [
    "Backend",
    "BackendInfo",
    "Generator",
    "Sample",
    "SamplingParams",
    "Scorer",
    "ScoringParams",
    "TopK",
    "backend_names",
    "check_ranks",
    "get",
    "load_generator",
    "load_scorer",
    "resolve",
]

FALLBACK = "hf"  # what fallback_to_hf falls back to: runs wherever torch does


def backend_names() -> tuple[str, ...]:
    return typing.get_args(BackendName)


def get(name: str) -> Backend:
    """The record of backend ``name`` (a recipe checked it is one of ``backend_names()``); loads nothing."""
    return importlib.import_module(f"rladctl.backends.{name}").BACKEND


def resolve(name: str, fallback_to_hf: bool) -> Backend:
    """Backend ``name``, or hf (with a log line) when it cannot run here and ``fallback_to_hf`` is on;
    otherwise its MissingDependencyError says what to install."""
    backend = get(name)
    try:
        backend.require()
    except MissingDependencyError as exc:
        if not fallback_to_hf:
            raise
        from rladctl.progress import log

        log(f"[yellow]{exc.what}; using the hf backend instead (fallback_to_hf = true)")
        return get(FALLBACK)
    return backend


def check_ranks(name: str, fallback_to_hf: bool, stage: str) -> None:
    """Refuse a one-process backend started on several ranks (vLLM spreads one engine over GPUs itself),
    except inside `rladctl run`, whose kept engines run one per rank (rladctl/engines.py).

    Resolves the backend (imports it) only where that could refuse: under torchrun.
    """
    if not distributed.enabled() or not get(name).one_process:
        return
    backend = resolve(name, fallback_to_hf)
    if backend.one_process and not (backend.keepable and engines.active()):
        raise ConfigError(
            f"{stage} with backend '{backend.name}' was started on {distributed.world_size()} ranks",
            "under torchrun",
            f"run it as one process (plain `rladctl {stage}`) and set tensor_parallel_size to use several GPUs; "
            "see docs/distributed.md",
        )


def load_generator(engine: EngineConfig, model: str, *, batch_size: int, seed: int) -> Generator:
    """The sampling backend ``engine`` names (resolved as ``resolve`` does), for ``model`` on this rank's device."""
    backend, cfg = resolve(engine.backend, engine.fallback_to_hf), _on_this_rank(engine)
    keeper = engines.active() if backend.keepable else None
    if keeper is None:
        return backend.load_generator(cfg, model, batch_size=batch_size, seed=seed)
    # `rladctl run`: one engine for the run, which takes each new checkpoint in place
    return keeper.generator(cfg, model, lambda: backend.load_generator(cfg, model, batch_size=0, seed=seed, kept=True))


def load_scorer(engine: EngineConfig, model: str, params: ScoringParams, backend: Backend | None = None) -> Scorer:
    """The scoring backend for ``model`` on this rank's device; ``backend``: already resolved by the
    caller (score-teacher resolves before loading, since the backend enters the fingerprint)."""
    backend, cfg = backend or resolve(engine.backend, engine.fallback_to_hf), _on_this_rank(engine)
    keeper = engines.active() if backend.keepable else None
    if keeper is None:
        return backend.load_scorer(cfg, model, params)
    return keeper.scorer(cfg, model, params, lambda: backend.load_scorer(cfg, model, params, kept=True))


def _on_this_rank(engine: EngineConfig) -> EngineConfig:
    return dataclasses.replace(engine, device=distributed.device(engine.device))
