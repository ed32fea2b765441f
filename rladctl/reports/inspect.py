"""Where the teacher steered: per-token numbers of a rollouts or scored artifact (issue 24).

Per completion i: reward r_i, correctness, and the group-normalised advantage A_i (the train stage's
own ``group_advantages`` over the artifact). Per token t:

    lp    sampler log-prob of the sampled token (the rollout's sampler_logprobs)
    lp_T  teacher log-prob (scored artifacts only)
    d     lp - lp_T; clamped when |d| > c
    r     the TRRD ratio at the first update of a train call, where lp = lp_old:
          log r = alpha (lp - lp_old) + (1 - alpha) clamp(lp - lp_T, -c, c) = (1 - alpha) clamp(d, -c, c)

r comes from ``rladctl.objectives.trrd.trrd_log_ratio``, the loss's own log-ratio, fed lp for both
lp and lp_old. Using the sampler's log-prob for lp assumes sampler and trainer agree (the trainer
recomputes lp_old; their gap is a train metric), so r is the ratio the loss starts from.

Token arrays are flat over the artifact, shape [N] with N = all completion tokens: row i's tokens
are ``offsets[i]:offsets[i + 1]``. The paper's scale (2,048 completions x 8K tokens, N = 16.7M)
stays in numpy; no per-token Python objects are made except for rows that are printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rladctl.errors import ArtifactError, ConfigError, ModelError, close_matches
from rladctl.store import schema as S

WHERE = ("correct", "wrong", "clamped")
CORRECT_AT = 1.0  # reward >= this is correct: eval's default threshold (an eval artifact records its own)
# Token shades: |d| / c below these gives shade 0, 1, 2, else 3; a clamped token (|d| > c) is 4.
# The sign of the shade is the sign of d. Unscored rollouts are shaded by surprise, -lp in nats.
GAP_SHADES = (0.1, 0.25, 0.5)
SURPRISE_SHADES = (0.1, 0.5, 1.5, 3.0)
MAX_SHADE = 4
_RATIO_CHUNK = 1 << 20  # tokens per call of the objective's log-ratio: bounds the float64 temporaries


@dataclass
class Inspection:
    """One artifact's rows ([B]) and tokens ([N], flat; see the module docstring)."""

    path: Path
    kind: str
    alpha: float
    clamp: float
    tokenizer: str | None  # the model directory tokens were decoded with; None = ids only
    prompt_ids: list[str]  # [B]
    sample_idx: np.ndarray  # [B] int
    prompts: list[str]  # [B]
    completions: list[str]  # [B]
    finish_reasons: list[str]  # [B]
    rewards: np.ndarray  # [B] float64 holding the artifact's float32 values
    advantages: np.ndarray  # [B] float64, A_i
    correct: np.ndarray  # [B] bool
    offsets: np.ndarray  # [B + 1] int64
    token_ids: np.ndarray  # [N] int64
    sampler_logprobs: np.ndarray  # [N] float32, lp (= lp_old at the first update)
    teacher_logprobs: np.ndarray | None  # [N] float32, lp_T; None for unscored rollouts
    ratio: np.ndarray | None  # [N] float64, TRRD r at the first update; None when unscored
    vocab: dict[int, str] | None  # text of every token id used; None without a tokenizer

    @property
    def rows(self) -> int:
        return len(self.prompt_ids)

    @property
    def scored(self) -> bool:
        return self.teacher_logprobs is not None

    def span(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @cached_property
    def teacher_gap(self) -> np.ndarray | None:
        """[N] float64 d = lp - lp_T."""
        if self.teacher_logprobs is None:
            return None
        return self.sampler_logprobs.astype(np.float64) - self.teacher_logprobs.astype(np.float64)

    @cached_property
    def clamped(self) -> np.ndarray | None:
        """[N] bool |d| > c: the teacher term is saturated (TRRD's teacher_clamp_frac counts these)."""
        return None if self.teacher_gap is None else np.abs(self.teacher_gap) > self.clamp

    @cached_property
    def shades(self) -> np.ndarray:
        """[N] int8 in -4..4 (scored: sign of d times its level, 4 = clamped) or 0..4 (surprise)."""
        if self.teacher_gap is None:
            return np.searchsorted(np.array(SURPRISE_SHADES), -self.sampler_logprobs, side="right").astype(np.int8)
        level = np.searchsorted(np.array(GAP_SHADES) * self.clamp, np.abs(self.teacher_gap), side="right")
        level[self.clamped] = MAX_SHADE
        return (np.sign(self.teacher_gap) * level).astype(np.int8)

    @cached_property
    def row_stats(self) -> dict[str, np.ndarray]:
        """[B] per-row token means: tokens, lp_mean, and when scored disagreement (mean |d|, what
        --worst ranks by), gap_mean, clamp_frac and ratio_mean. A row without tokens gives 0."""
        counts = np.diff(self.offsets)  # [B]
        row_N = np.repeat(np.arange(self.rows), counts)  # [N] row of each token

        def mean(values_N: np.ndarray) -> np.ndarray:
            sums = np.bincount(row_N, weights=values_N.astype(np.float64), minlength=self.rows)
            return sums / np.maximum(counts, 1)

        stats = {"tokens": counts, "lp_mean": mean(self.sampler_logprobs)}
        if self.teacher_gap is not None:
            stats |= {
                "disagreement": mean(np.abs(self.teacher_gap)),
                "gap_mean": mean(self.teacher_gap),
                "clamp_frac": mean(self.clamped),
                "ratio_mean": mean(self.ratio),
            }
        return stats

    def token_texts(self, i: int) -> list[str] | None:
        if self.vocab is None:
            return None
        return [self.vocab[t] for t in self.token_ids[self.span(i)].tolist()]


def inspect_artifact(path: str | Path, alpha: float = 0.5, clamp: float = 1.0) -> Inspection:
    """Read a rollouts, scored or eval artifact and compute the per-token view (module docstring)."""
    import torch

    from rladctl.objectives.advantages import group_advantages
    from rladctl.store.artifacts import open_artifact, validate_token_columns

    check_knobs(alpha, clamp)
    artifact = open_artifact(path, (S.ROLLOUTS, S.SCORED, S.EVAL))
    if artifact.rows == 0:
        raise ArtifactError(f"artifact {artifact.path} has no rows", None, "inspect an artifact with rows")
    scored = artifact.kind == S.SCORED
    columns = [
        S.PROMPT_ID,
        S.SAMPLE_IDX,
        S.PROMPT,
        S.COMPLETION,
        S.COMPLETION_TOKEN_IDS,
        S.SAMPLER_LOGPROBS,
        S.FINISH_REASON,
        S.REWARD,
    ] + ([S.TEACHER_LOGPROBS] if scored else [])
    table = artifact.table(columns)
    validate_token_columns(table, (S.SAMPLER_LOGPROBS, S.TEACHER_LOGPROBS), str(artifact.path))
    offsets, token_ids = _flat(table[S.COMPLETION_TOKEN_IDS])
    sampler = _flat(table[S.SAMPLER_LOGPROBS])[1].astype(np.float32)
    teacher = _flat(table[S.TEACHER_LOGPROBS])[1].astype(np.float32) if scored else None
    rewards = table[S.REWARD].to_numpy().astype(np.float64)
    prompt_ids = table[S.PROMPT_ID].to_pylist()
    sampled_by = artifact.manifest.get("model") or artifact.manifest.get("student") or {}
    model_dir = sampled_by.get("path") if isinstance(sampled_by, dict) else None
    threshold = float((artifact.manifest.get("eval") or {}).get("threshold", CORRECT_AT))
    vocab = decode_vocab(model_dir, token_ids)
    return Inspection(
        path=artifact.path,
        kind=artifact.kind,
        alpha=float(alpha),
        clamp=float(clamp),
        tokenizer=model_dir if vocab is not None else None,
        prompt_ids=prompt_ids,
        sample_idx=table[S.SAMPLE_IDX].to_numpy(),
        prompts=table[S.PROMPT].to_pylist(),
        completions=table[S.COMPLETION].to_pylist(),
        finish_reasons=table[S.FINISH_REASON].to_pylist(),
        rewards=rewards,
        advantages=group_advantages(rewards, prompt_ids, dtype=torch.float64).numpy(),
        correct=rewards >= threshold,
        offsets=offsets,
        token_ids=token_ids,
        sampler_logprobs=sampler,
        teacher_logprobs=teacher,
        vocab=vocab,
        ratio=None if teacher is None else first_update_ratio(sampler, teacher, alpha, clamp),
    )


def check_knobs(alpha: float, clamp: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha is {alpha}", None, "alpha must lie in [0, 1] (1 = GRPO, the paper's default 0.5)")
    if not clamp > 0.0:
        raise ConfigError(f"clamp is {clamp}", None, "the clamp c must be > 0 (the paper's default is 1)")


def first_update_ratio(sampler_N: np.ndarray, teacher_N: np.ndarray, alpha: float, clamp: float) -> np.ndarray:
    """[N] float64 TRRD ratio with lp = lp_old = the sampler's log-prob, from the objective itself."""
    import torch

    from rladctl.objectives.base import LossInputs, ObjectiveConfig
    from rladctl.objectives.trrd import trrd_log_ratio

    cfg = ObjectiveConfig(name="trrd", alpha=alpha, clamp=clamp)
    ratio_N = np.empty(len(sampler_N), dtype=np.float64)
    for start in range(0, len(sampler_N), _RATIO_CHUNK):
        stop = min(start + _RATIO_CHUNK, len(sampler_N))
        # Tokens are independent in the log-ratio, so a chunk of the flat array is one [1, T] row.
        lp_1T = torch.from_numpy(sampler_N[start:stop].astype(np.float64))[None]  # [1, T]
        teacher_1T = torch.from_numpy(teacher_N[start:stop].astype(np.float64))[None]  # [1, T]
        mask_1T = torch.ones_like(lp_1T, dtype=torch.bool)
        inputs = LossInputs(lp_1T, lp_1T, torch.zeros(1, dtype=torch.float64), mask_1T, teacher_logprobs=teacher_1T)
        ratio_N[start:stop] = torch.exp(trrd_log_ratio(inputs, cfg))[0].numpy()
    return ratio_N


def decode_vocab(model_dir: str | None, token_ids_N: np.ndarray) -> dict[int, str] | None:
    """The text of each distinct id, decoded one token at a time with the model's tokenizer; None
    when the manifest names no local directory (moved, deleted, a hub id) or it holds no tokenizer."""
    if not model_dir or not Path(model_dir).is_dir():
        return None
    from rladctl.models.tokenizer import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
    except ModelError:
        return None  # inspecting still works on ids
    ids = np.unique(token_ids_N).tolist()
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return dict(zip(ids, texts))


def _flat(column) -> tuple[np.ndarray, np.ndarray]:
    """(offsets [B + 1], values [N]) of a list column."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = pc.list_flatten(column)
    values = values.combine_chunks() if hasattr(values, "combine_chunks") else values
    return offsets, values.to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------------------------
# selecting rows


def select_rows(
    insp: Inspection,
    row: int | None = None,
    prompt_id: str | None = None,
    where: str | None = None,
    worst: int | None = None,
) -> list[int]:
    """Row indices that pass every given selector, in artifact order, or by falling mean |d| with
    ``worst`` (the K largest disagreements). No selector selects every row."""
    keep = np.ones(insp.rows, dtype=bool)
    if row is not None:
        if not 0 <= row < insp.rows:
            raise ConfigError(
                f"row {row} is out of range",
                f"in {insp.path} ({insp.rows} rows)",
                f"pick a row from 0 to {insp.rows - 1}",
            )
        keep[:] = False
        keep[row] = True
    if prompt_id is not None:
        match = np.array([p == prompt_id for p in insp.prompt_ids])
        if not match.any():
            known = sorted(set(insp.prompt_ids))
            hint = close_matches(prompt_id, known) or f"it holds {len(known)} prompt ids, such as '{known[0]}'"
            raise ConfigError(f"prompt id '{prompt_id}' is not in the artifact", f"in {insp.path}", hint)
        keep &= match
    if where is not None:
        keep &= _where(insp, where)
    if worst is not None:
        if worst < 1:
            raise ConfigError(f"worst is {worst}", None, "ask for the K >= 1 rows of largest disagreement")
        stats = _needs_teacher(insp, "worst").row_stats
        order = np.argsort(-stats["disagreement"], kind="stable")  # ties keep artifact order
        return [int(i) for i in order if keep[i]][:worst]
    return np.flatnonzero(keep).tolist()


def _where(insp: Inspection, where: str) -> np.ndarray:
    if where == "correct":
        return insp.correct.copy()
    if where == "wrong":
        return ~insp.correct
    if where == "clamped":
        return _needs_teacher(insp, "where clamped").row_stats["clamp_frac"] > 0
    hint = close_matches(where, WHERE)
    listing = f"use one of {', '.join(WHERE)}"
    raise ConfigError(f"unknown filter '{where}'", None, f"{hint} {listing}" if hint else listing)


def _needs_teacher(insp: Inspection, option: str) -> Inspection:
    if not insp.scored:
        raise ArtifactError(
            f"--{option} needs teacher log-probs but {insp.path} is an unscored {insp.kind} artifact",
            None,
            "run rladctl score-teacher on it and inspect the scored artifact",
        )
    return insp


# --------------------------------------------------------------------------------------------
# numbers for scripts


def summary(insp: Inspection, rows: list[int]) -> dict[str, Any]:
    """Token-weighted means over the selected rows (those of the loss's metrics, at the first update)."""
    idx = np.asarray(rows, dtype=np.int64)
    picked = np.zeros(insp.rows, dtype=bool)
    picked[idx] = True
    tokens = np.repeat(picked, np.diff(insp.offsets))  # [N] bool
    out: dict[str, Any] = {
        "artifact": str(insp.path),
        "kind": insp.kind,
        "rows": insp.rows,
        "selected": len(rows),
        "alpha": insp.alpha,
        "clamp": insp.clamp,
        "tokenizer": insp.tokenizer,
        "tokens": int(tokens.sum()),
        "reward_mean": _mean(insp.rewards[idx]),
        "correct_frac": _mean(insp.correct[idx]),
        "sampler_logprob_mean": _mean(insp.sampler_logprobs[tokens]),
    }
    if insp.scored:
        gap = insp.teacher_gap[tokens]
        out |= {
            "teacher_gap_mean": _mean(gap),
            "disagreement_mean": _mean(np.abs(gap)),
            "clamp_frac": _mean(insp.clamped[tokens]),
            "ratio_mean": _mean(insp.ratio[tokens]),
        }
    return out


def row_record(insp: Inspection, i: int, tokens: bool = True) -> dict[str, Any]:
    """Row i's numbers: its scalars and, with ``tokens``, every per-token value (exact, unrounded)."""
    stats = {k: v[i].item() for k, v in insp.row_stats.items()}
    out: dict[str, Any] = {
        "row": i,
        "prompt_id": insp.prompt_ids[i],
        "sample_idx": int(insp.sample_idx[i]),
        "prompt": insp.prompts[i],
        "completion": insp.completions[i],
        "finish_reason": insp.finish_reasons[i],
        "reward": float(insp.rewards[i]),
        "advantage": float(insp.advantages[i]),
        "correct": bool(insp.correct[i]),
        **stats,
    }
    if tokens:
        span = insp.span(i)
        out |= {
            "token_ids": insp.token_ids[span].tolist(),
            "token_texts": insp.token_texts(i),
            "sampler_logprobs": insp.sampler_logprobs[span].tolist(),
        }
        if insp.scored:
            out |= {
                "teacher_logprobs": insp.teacher_logprobs[span].tolist(),
                "teacher_gap": insp.teacher_gap[span].tolist(),
                "clamped": insp.clamped[span].tolist(),
                "ratio": insp.ratio[span].tolist(),
            }
    return out


def inspect_report(insp: Inspection, rows: list[int]) -> dict[str, Any]:
    """What ``rladctl inspect --json`` prints: the summary and one record per row."""
    return {"summary": summary(insp, rows), "rows_shown": [row_record(insp, i) for i in rows]}


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None
