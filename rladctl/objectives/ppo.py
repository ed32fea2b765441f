"""The PPO-style clipped surrogate shared by grpo, trrd, kdrl and opd (DESIGN §4, "Both").

An objective supplies only its per-token log-ratio (and opd its per-token advantages);
``policy_loss`` does the rest, so the objectives cannot drift apart in clipping, aggregation,
reference KL or metric definitions.
"""

from __future__ import annotations

import torch

from rladctl.errors import ConfigError
from rladctl.objectives import base
from rladctl.objectives.base import (
    LossInputs,
    LossOutputs,
    ObjectiveConfig,
    aggregate,
    masked_mean,
)


def kept(values_BT: torch.Tensor, keep_BT: torch.Tensor) -> torch.Tensor:
    """Zero the padded positions BEFORE any exp or square: a -inf there would otherwise turn into
    a NaN gradient even under torch.where."""
    return values_BT.masked_fill(~keep_BT, 0.0)  # [B, T]


def require_teacher(inputs: LossInputs, objective: str) -> torch.Tensor:
    if inputs.teacher_logprobs is None:
        raise ConfigError(
            f"objective '{objective}' needs teacher_logprobs",
            "but the batch has none",
            "run score-teacher first and train on its scored artifact",
        )
    return inputs.teacher_logprobs


def per_token(advantages: torch.Tensor, like_BT: torch.Tensor) -> torch.Tensor:
    """Advantages [B] (one per completion, broadcast to its tokens) or [B, T] (one per token) -> [B, T]."""
    adv = advantages.to(like_BT.dtype)
    return adv if adv.dim() == 2 else adv[:, None].expand_as(like_BT)


def clipped_surrogate(
    log_ratio_BT: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A); returns (loss_BT, ratio_BT).
    ``advantages`` is [B] or [B, T] (``per_token``)."""
    ratio_BT = torch.exp(log_ratio_BT)  # [B, T]
    adv_BT = per_token(advantages, ratio_BT)  # [B, T]
    unclipped_BT = ratio_BT * adv_BT
    clipped_BT = ratio_BT.clamp(1.0 - eps_low, 1.0 + eps_high) * adv_BT
    return -torch.minimum(unclipped_BT, clipped_BT), ratio_BT


def k3(log_ratio_BT: torch.Tensor) -> torch.Tensor:
    """exp(x) - x - 1 with x = log(q/p) on samples of p: an unbiased, non-negative KL(p || q)."""
    return torch.expm1(log_ratio_BT) - log_ratio_BT


def policy_loss(
    log_ratio_BT: torch.Tensor, inputs: LossInputs, cfg: ObjectiveConfig, advantages_BT: torch.Tensor | None = None
) -> LossOutputs:
    """Clipped surrogate on ``log_ratio_BT`` (already zero on padding), aggregated, plus the
    optional ref_beta * k3 KL(student || reference). ``advantages_BT`` (constants, zero on
    padding) replaces the batch's per-completion ``inputs.advantages`` when given."""
    keep_BT = inputs.mask != 0
    agg = dict(mode=cfg.aggregation, denominators=inputs.denominators, max_tokens=cfg.max_completion_tokens)
    advantages = inputs.advantages if advantages_BT is None else advantages_BT
    token_loss_BT, ratio_BT = clipped_surrogate(log_ratio_BT, advantages, cfg.eps_low, cfg.eps_high)
    pg_loss = aggregate(token_loss_BT, keep_BT, **agg)
    loss = pg_loss
    lp_BT = kept(inputs.student_logprobs, keep_BT)  # [B, T]
    metrics = ppo_metrics(ratio_BT, lp_BT - kept(inputs.old_logprobs, keep_BT), advantages, keep_BT, cfg)
    if cfg.ref_beta > 0.0:
        if inputs.ref_logprobs is None:
            raise ConfigError(
                f"objective.ref_beta is {cfg.ref_beta} but the batch has no ref_logprobs",
                "in [objective]",
                "set ref_beta = 0 or pass reference log-probs",
            )
        kl_ref_BT = k3(kept(inputs.ref_logprobs, keep_BT) - lp_BT)  # [B, T]
        loss = loss + cfg.ref_beta * aggregate(kl_ref_BT, keep_BT, **agg)
        metrics[base.KL_REF] = masked_mean(kl_ref_BT, keep_BT)
    if inputs.teacher_logprobs is not None:  # cheap, and lets GRPO runs show the teacher gap too
        gap_BT = lp_BT - kept(inputs.teacher_logprobs, keep_BT)
        metrics[base.TEACHER_LOGRATIO_MEAN] = masked_mean(gap_BT, keep_BT)
    metrics[base.PG_LOSS] = float(pg_loss.detach())
    metrics[base.LOSS] = float(loss.detach())
    return LossOutputs(loss, metrics)


@torch.no_grad()
def ppo_metrics(
    ratio_BT: torch.Tensor,
    old_log_ratio_BT: torch.Tensor,
    advantages: torch.Tensor,
    keep_BT: torch.Tensor,
    cfg: ObjectiveConfig,
) -> dict[str, float]:
    adv_BT = per_token(advantages, ratio_BT)  # [B, T]
    low_BT = (adv_BT < 0) & (ratio_BT < 1.0 - cfg.eps_low)
    high_BT = (adv_BT > 0) & (ratio_BT > 1.0 + cfg.eps_high)
    return {
        base.CLIP_FRAC_LOW: masked_mean(low_BT.double(), keep_BT),
        base.CLIP_FRAC_HIGH: masked_mean(high_BT.double(), keep_BT),
        base.RATIO_MEAN: masked_mean(ratio_BT, keep_BT),
        base.APPROX_KL_OLD: masked_mean(k3(old_log_ratio_BT), keep_BT),
        base.NUM_TOKENS: float(keep_BT.sum()),
    }
