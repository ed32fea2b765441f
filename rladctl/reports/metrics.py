"""Pass@k and Mean@k over evaluation samples, per difficulty level, with bootstrap intervals.

Light on purpose (numpy only, no torch): the report and the CLI import it to print a summary.

Dimension letters: P prompts, N samples per prompt (N >= K), M metrics, R bootstrap resamples.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from rladctl.errors import ConfigError

_PASS_AT_FIX = "Sample more per prompt (eval.n) or lower --pass-at"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k of one prompt with ``c`` correct answers among ``n`` samples.

    Chen et al. 2021 (Codex), Eq. 1: ``1 - C(n-c, k) / C(n, k)``, computed in the stable product
    form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` so that no binomial coefficient overflows.
    """
    if k < 1:
        raise ConfigError(f"pass@k needs k >= 1, got k={k}", "in the pass@k estimator", "Use --pass-at 1 or more")
    if k > n:
        raise ConfigError(
            f"pass@k needs k <= n samples per prompt, got k={k} with n={n}",
            "in the pass@k estimator",
            _PASS_AT_FIX,
        )
    if not 0 <= c <= n:
        raise ConfigError(
            f"pass@k needs 0 <= c <= n correct samples, got c={c} with n={n}",
            "in the pass@k estimator",
            "Count correct samples among the n drawn for the prompt",
        )
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_table(n: int, k: int) -> np.ndarray:
    """``table[c] = pass_at_k(n, c, k)`` for every c in 0..n, as a float64 array of shape [n+1].

    The product for c is the product for c-1 times one more factor ``(1 - k/(n-c+1))``, so one
    cumulative product gives the whole table; the factor for i = k is exactly 0, which makes every
    c with n - c < k exactly 1.0, as in the scalar form.
    """
    pass_at_k(n, 0, k)  # same refusals as the scalar form
    factors = 1.0 - k / np.arange(n, 0, -1, dtype=np.float64)  # i = n, n-1, ..., 1
    table = np.empty(n + 1, dtype=np.float64)
    table[0] = 0.0
    table[1:] = 1.0 - np.cumprod(factors)
    return table


def ks_for(K: int) -> list[int]:
    """The k values reported for Pass@K: powers of two below K, then K (32 -> 1, 2, ..., 32)."""
    if K < 1:
        raise ConfigError(f"pass@k needs K >= 1, got K={K}", "in --pass-at", "Use --pass-at 1 or more")
    ks, k = [], 1
    while k < K:
        ks.append(k)
        k *= 2
    return ks + [K]


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: "2" < "10", "ppl2" < "ppl10"."""
    parts = re.split(r"(\d+)", text)  # even positions text, odd positions digit runs
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (text,)


@dataclass
class PromptResult:
    """Every verifier score of one prompt's samples; ``difficulty`` None when the task has none."""

    prompt_id: str
    difficulty: str | None
    scores: list[float]


@dataclass(frozen=True)
class GroupSummary:
    """Metrics over one set of prompts (all of them, or one difficulty level).

    ``mean`` is Mean@K: the plain mean of the RAW scores of all samples (partial credit counts
    as its value), like the paper's Mean@32. ``accuracy`` is the mean of correctness
    (score >= threshold). ``pass_at[k]`` is the mean over prompts of the unbiased per-prompt
    estimator. ``*_ci`` are 95% percentile bootstrap intervals over prompts; None / empty when
    bootstrap = 0.
    """

    prompts: int
    n: int
    mean: float
    accuracy: float
    pass_at: dict[int, float]
    mean_ci: tuple[float, float] | None = None
    accuracy_ci: tuple[float, float] | None = None
    pass_at_ci: dict[int, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "n": self.n,
            "mean": self.mean,
            "mean_ci": _list_or_none(self.mean_ci),
            "accuracy": self.accuracy,
            "accuracy_ci": _list_or_none(self.accuracy_ci),
            "pass_at": {str(k): v for k, v in self.pass_at.items()},
            "pass_at_ci": {str(k): list(v) for k, v in self.pass_at_ci.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> GroupSummary:
        return cls(
            prompts=d["prompts"],
            n=d["n"],
            mean=d["mean"],
            accuracy=d["accuracy"],
            pass_at={int(k): v for k, v in d["pass_at"].items()},
            mean_ci=_tuple_or_none(d.get("mean_ci")),
            accuracy_ci=_tuple_or_none(d.get("accuracy_ci")),
            pass_at_ci={int(k): tuple(v) for k, v in d.get("pass_at_ci", {}).items()},
        )


@dataclass(frozen=True)
class Summary:
    """One model's evaluation: overall and per difficulty level (levels in natural order).

    Prompts whose difficulty is None count in ``overall`` only.
    """

    K: int
    n: int
    threshold: float
    bootstrap: int
    seed: int
    overall: GroupSummary
    by_difficulty: dict[str, GroupSummary]

    @property
    def ks(self) -> list[int]:
        return ks_for(self.K)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (int keys become strings)."""
        return {
            "K": self.K,
            "n": self.n,
            "threshold": self.threshold,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "overall": self.overall.to_dict(),
            "by_difficulty": {lvl: g.to_dict() for lvl, g in self.by_difficulty.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Summary:
        return cls(
            K=d["K"],
            n=d["n"],
            threshold=d["threshold"],
            bootstrap=d["bootstrap"],
            seed=d["seed"],
            overall=GroupSummary.from_dict(d["overall"]),
            by_difficulty={lvl: GroupSummary.from_dict(g) for lvl, g in d["by_difficulty"].items()},
        )


def summarize(
    results: list[PromptResult],
    K: int,
    threshold: float = 1.0,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Summary:
    """Mean@K, accuracy and Pass@k (k in ``ks_for(K)``) overall and per difficulty level.

    Every prompt must have the same number of samples n >= K; Mean@K and accuracy use all n
    (an unbiased estimate of the K-sample mean). A sample is correct when score >= threshold, so
    with the default 1.0 partial credit never counts toward Pass@k. Intervals resample prompts
    with replacement (``bootstrap`` times, numpy Generator seeded by ``seed``; each difficulty
    level gets its own stream derived from its name), so the result is a pure function of inputs.
    """
    ks = ks_for(K)
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}", "in the eval summary", "Use 0 to skip intervals")
    n = _common_n(results, K)
    scores_P_N = np.array([r.scores for r in results], dtype=np.float64)
    correct_P = (scores_P_N >= threshold).sum(axis=1)  # [P] correct samples per prompt
    tables = [pass_at_k_table(n, k) for k in ks]
    # one column per metric: mean, accuracy, pass@k for each k  -> [P, M]
    values_P_M = np.column_stack([scores_P_N.mean(axis=1), correct_P / n] + [table[correct_P] for table in tables])
    overall = _group(values_P_M, n, ks, bootstrap, np.random.default_rng(seed))
    levels = sorted({r.difficulty for r in results if r.difficulty is not None}, key=natural_key)
    by_difficulty = {}
    for level in levels:
        rows = np.array([r.difficulty == level for r in results])
        rng = np.random.default_rng([seed, zlib.crc32(level.encode())])
        by_difficulty[level] = _group(values_P_M[rows], n, ks, bootstrap, rng)
    return Summary(K, n, float(threshold), bootstrap, seed, overall, by_difficulty)


def _common_n(results: list[PromptResult], K: int) -> int:
    if not results:
        raise ConfigError("no prompts to summarize", "in the eval results", "Check that the eval artifact is not empty")
    n = len(results[0].scores)
    for r in results:
        if len(r.scores) != n:
            raise ConfigError(
                f"every prompt needs the same number of samples, prompt {r.prompt_id!r} has "
                f"{len(r.scores)} and prompt {results[0].prompt_id!r} has {n}",
                "in the eval results",
                "Re-run eval so that it completes every prompt",
            )
    if n < K:
        raise ConfigError(f"pass@{K} needs k <= n samples per prompt, got n={n}", "in the eval results", _PASS_AT_FIX)
    return n


def _group(values_P_M: np.ndarray, n: int, ks: list[int], bootstrap: int, rng) -> GroupSummary:
    point_M = values_P_M.mean(axis=0)
    cis = _bootstrap_ci(values_P_M, bootstrap, rng) if bootstrap else None  # [M] of (lo, hi)
    return GroupSummary(
        prompts=int(values_P_M.shape[0]),
        n=n,
        mean=float(point_M[0]),
        accuracy=float(point_M[1]),
        pass_at={k: float(v) for k, v in zip(ks, point_M[2:])},
        mean_ci=cis[0] if cis else None,
        accuracy_ci=cis[1] if cis else None,
        pass_at_ci=dict(zip(ks, cis[2:])) if cis else {},
    )


def _bootstrap_ci(values_P_M: np.ndarray, resamples: int, rng) -> list[tuple[float, float]]:
    """95% percentile interval of each column mean, resampling rows (prompts) with replacement."""
    P = values_P_M.shape[0]
    chunk = max(1, (1 << 20) // P)  # bounds memory at ~1M indices; depends on P only (determinism)
    means = []
    for start in range(0, resamples, chunk):
        idx_R_P = rng.integers(0, P, size=(min(chunk, resamples - start), P))
        means.append(values_P_M[idx_R_P].mean(axis=1))  # [R, P, M] -> [R, M]
    lo_M, hi_M = np.percentile(np.concatenate(means), [2.5, 97.5], axis=0)
    return [(float(lo), float(hi)) for lo, hi in zip(lo_M, hi_M)]


def _list_or_none(pair):
    return None if pair is None else list(pair)


def _tuple_or_none(pair):
    return None if pair is None else tuple(pair)
