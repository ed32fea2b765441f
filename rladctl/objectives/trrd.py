"""TRRD, the RLAD objective: the PPO ratio taken against a teacher/old-policy mixture anchor."""

from __future__ import annotations

import torch

from rladctl.objectives import base
from rladctl.objectives.base import (
    LossInputs,
    LossOutputs,
    ObjectiveConfig,
    masked_mean,
)
from rladctl.objectives.ppo import kept, policy_loss, require_teacher


def trrd_loss(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs:
    """Trust-Region Ratio Distillation (paper Eq. 3-5, App. B).

        r = (pi_S / pi_old)^alpha * (pi_S / pi_T)^(1 - alpha), at the sampled token only:
        log r_it = alpha (lp - lp_old)_it + (1 - alpha) clamp(lp - lp_T, -c, c)_it      [B, T]
        l_it     = -min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i)           [B, T]
        loss     = aggregate(l, mask) (+ ref_beta * aggregate(k3 KL to reference))

    alpha = 1 is exactly GRPO, in value and gradient (Eq. 3 and App. C). The prose of the paper's
    §4.1 says alpha = 0 is GRPO; that is a slip, and rladctl follows the equations.

    The paper does not say whether the clamp stops the gradient; ``cfg.clamp_mode`` picks:
      hard              torch.clamp: where |lp - lp_T| > c the teacher term is constant, so the
                        token keeps only alpha of its gradient (the literal reading; default).
      straight_through  same value, but the clamp is a detached offset, so d log r / d lp = 1.
    Because of the clamp, r lies in exp(+-(1 - alpha) c) at lp = lp_old ([0.61, 1.65] for the
    defaults): a high clip fraction at the first update is expected.

    Shapes: all log-probs and mask [B, T], advantages [B]. Needs teacher_logprobs.
    """
    log_ratio_BT = trrd_log_ratio(inputs, cfg)
    out = policy_loss(log_ratio_BT, inputs, cfg)
    with torch.no_grad():
        keep_BT = inputs.mask != 0
        gap_BT = kept(inputs.student_logprobs, keep_BT) - kept(inputs.teacher_logprobs, keep_BT)  # [B, T]
        out.metrics[base.TEACHER_CLAMP_FRAC] = masked_mean((gap_BT.abs() > cfg.clamp).double(), keep_BT)
    return out


def trrd_log_ratio(inputs: LossInputs, cfg: ObjectiveConfig) -> torch.Tensor:
    """TRRD's per-token log-ratio, the only part of the loss that is TRRD's own (paper Eq. 3-5):

        log r_it = alpha (lp - lp_old)_it + (1 - alpha) clamp(lp - lp_T, -c, c)_it      [B, T]

    Zero on padding. ``rladctl inspect`` calls it too, so the ratio it shows is the loss's ratio.
    """
    teacher_BT = require_teacher(inputs, "trrd")
    keep_BT = inputs.mask != 0
    lp_BT = kept(inputs.student_logprobs, keep_BT)  # [B, T]
    gap_BT = lp_BT - kept(teacher_BT, keep_BT)  # [B, T] log(pi_S / pi_T)
    clamped_BT = gap_BT.clamp(-cfg.clamp, cfg.clamp)
    if cfg.clamp_mode == "straight_through":
        clamped_BT = gap_BT + (clamped_BT - gap_BT).detach()
    old_term_BT = lp_BT - kept(inputs.old_logprobs, keep_BT)  # [B, T] log(pi_S / pi_old)
    return cfg.alpha * old_term_BT + (1.0 - cfg.alpha) * clamped_BT
