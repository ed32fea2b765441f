"""KDRL baseline: GRPO plus a reverse-KL pull toward the teacher on every sampled token."""

from __future__ import annotations

from rladctl.objectives import base
from rladctl.objectives.base import (
    LossInputs,
    LossOutputs,
    ObjectiveConfig,
    aggregate,
    masked_mean,
)
from rladctl.objectives.grpo import grpo_loss
from rladctl.objectives.ppo import kept, require_teacher


def kdrl_loss(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs:
    """GRPO + kl_beta * KL(student || teacher), k2 estimator on the sampled tokens.

        k2_it = 0.5 (lp - lp_T)_it^2                                   [B, T]
        loss  = grpo_loss + kl_beta * aggregate(k2, mask)

    On-policy, grad of E[k2] is the grad of the reverse KL, unlike k1 or k3. The teacher term is
    aggregated like the policy term. ``cfg.kl_beta`` is used as given: to anneal, the trainer
    passes ``dataclasses.replace(cfg, kl_beta=kdrl_beta(cfg, step, total_steps))``. kl_beta = 0
    is exactly GRPO. Shapes: all log-probs and mask [B, T], advantages [B]. Needs teacher_logprobs.
    """
    teacher_BT = require_teacher(inputs, "kdrl")
    out = grpo_loss(inputs, cfg)
    keep_BT = inputs.mask != 0
    k2_BT = 0.5 * (kept(inputs.student_logprobs, keep_BT) - kept(teacher_BT, keep_BT)) ** 2  # [B, T]
    if cfg.kl_beta != 0.0:
        kl = aggregate(k2_BT, keep_BT, cfg.aggregation, inputs.denominators, cfg.max_completion_tokens)
        out.loss = out.loss + cfg.kl_beta * kl
    out.metrics[base.KL_TEACHER] = masked_mean(k2_BT, keep_BT)
    out.metrics[base.KL_BETA] = float(cfg.kl_beta)
    out.metrics[base.LOSS] = float(out.loss.detach())
    return out


def kdrl_beta(cfg: ObjectiveConfig, step: int, total_steps: int) -> float:
    """The KL coefficient at ``step`` (0-based): kl_beta at step 0, kl_beta_end at the last step
    (total_steps - 1), linear between, held outside. kl_beta_end = None keeps kl_beta."""
    if cfg.kl_beta_end is None or total_steps <= 1:
        return cfg.kl_beta
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return cfg.kl_beta + frac * (cfg.kl_beta_end - cfg.kl_beta)


def kdrl_schedule(cfg: ObjectiveConfig, step: int, total_steps: int) -> dict[str, float]:
    """The registry's per-step config for kdrl: kl_beta annealed by ``kdrl_beta``."""
    return {"kl_beta": kdrl_beta(cfg, step, total_steps)}
