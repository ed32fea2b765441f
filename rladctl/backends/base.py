"""The two interfaces every backend implements, and the record the stages ask before loading one.

A ``Generator`` samples: token-id prompts (already repeated G times by the caller) in, one ``Sample``
per prompt out. A ``Scorer`` gives the teacher's log-prob of every completion token. Both carry a
``BackendInfo`` for the manifest and a ``close()``. A ``Backend`` record (one per module, named
``BACKEND``) says what a stage must know before any model loads: whether the backend runs as one
process, what it adds to a scored artifact's fingerprint, and how to load each role. Stages ask
the record or the loaded object; none compares a backend's name.

No torch here: the recipe check and ``--help`` import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Per row B: the T completion tokens' top-k as (ids [T][k], log-probs [T][k]), best first.
TopK = tuple[list[list[int]], list[list[float]]] | None


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # schema.FINISH_STOP | schema.FINISH_LENGTH


@dataclass(frozen=True)
class ScoringParams:
    temperature: float = 1.0  # the teacher's logits are divided by it
    top_k: int = 0  # also return the teacher's top-k per position
    micro_batch_tokens: int = 16_384  # padded tokens per forward pass (hf)
    chunk_tokens: int = 1_024  # positions per log-prob chunk (hf)


@dataclass(frozen=True)
class BackendInfo:
    """What a manifest records of the backend that wrote an artifact."""

    name: str
    version: str
    dtype: str  # of the weights as loaded, e.g. "torch.float32"

    def entry(self) -> dict[str, str]:
        """The manifest's ``backend`` entry."""
        return {"name": self.name, "version": self.version}


class Generator(Protocol):
    info: BackendInfo
    tokenizer: Any
    context_length: int | None  # prompt + completion tokens the engine accepts (None: unknown)

    def generate(self, prompts: list[list[int]], params: SamplingParams, on_batch=None) -> list[Sample]: ...

    def close(self) -> None: ...


class Scorer(Protocol):
    info: BackendInfo
    tokenizer: Any
    vocab_size: int

    def score(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        on_tokens: Callable[[int], None] | None = None,
    ) -> tuple[list[list[float]], list[TopK]]:
        """Per row B, the teacher log-prob of each of its T completion tokens, and its top-k (or None)."""
        ...

    def close(self) -> None: ...


def _always_available() -> None:
    return None


@dataclass(frozen=True)
class Backend:
    """One backend as the stages see it before loading: ``rladctl.backends.<name>.BACKEND``."""

    name: str
    # load_generator(engine, model, batch_size=, seed=) and load_scorer(engine, model, params)
    load_generator: Callable[..., Generator]
    load_scorer: Callable[..., Scorer]
    # Spreads one engine over GPUs itself (tensor parallelism), so it never runs under torchrun.
    one_process: bool = False
    # Its loaders take ``kept=True`` and return an engine that `rladctl run` keeps through the run
    # (rladctl/engines.py): sleep(level), wake(tags), load_weights(named tensors), load_weights_from(dir).
    keepable: bool = False
    # Added to a scored artifact's fingerprint. hf adds nothing: its artifacts predate the key.
    fingerprint: Mapping[str, str] = field(default_factory=dict)
    # Raises MissingDependencyError where the backend cannot run (a package not installed).
    require: Callable[[], None] = _always_available


def eos_token_ids(model, tokenizer) -> list[int]:
    """The stop set: generation_config's eos ids plus the tokenizer's; ``model`` needs only ``generation_config``."""
    ids = []
    gen_cfg = getattr(model, "generation_config", None)
    for source in (getattr(gen_cfg, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.append(source)
        elif source:
            ids.extend(source)
    return sorted(set(ids))
