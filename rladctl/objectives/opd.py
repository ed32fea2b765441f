"""On-policy distillation (OPD), the baseline verl, slime, prime-rl, NeMo-RL and the Tinker cookbook
ship: the teacher's per-token log-ratio is the advantage, in the same clipped surrogate (DESIGN §4).
"""

from __future__ import annotations

import torch

from rladctl.objectives.base import LossInputs, LossOutputs, ObjectiveConfig
from rladctl.objectives.ppo import kept, policy_loss, require_teacher


def opd_loss(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs:
    """OPD: no reward, no alpha; each sampled token is pushed by how much more the teacher likes it.

        A_it     = -(lp_old - lp_T)_it    (minus the sampled-token estimate of KL(old || teacher))   [B, T]
        log r_it = lp_it - lp_old_it                                                                [B, T]
        l_it     = -min(r_it A_it, clip(r_it, 1 - eps_low, 1 + eps_high) A_it)                      [B, T]
        loss     = aggregate(l, mask) (+ ref_beta * aggregate(k3 KL to reference))

    A is a constant (no gradient flows through lp_old or lp_T). At the first update (r = 1) the
    token's gradient is (lp - lp_T) d lp: on-policy, the score-function estimate of the gradient
    of each position's KL(student || teacher), with no credit to later tokens (discount 0, as the
    peers ship it); the clip bounds how far one batch moves. The reward's ``inputs.advantages`` are not used, so train keeps every row (``AllRows``),
    also the groups whose rewards all agree.
    Shapes: all log-probs and mask [B, T]. Needs teacher_logprobs.
    """
    log_ratio_BT = old_log_ratio(inputs)
    return policy_loss(log_ratio_BT, inputs, cfg, teacher_advantages(inputs, "opd"))


def opd_grpo_loss(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs:
    """OPD plus GRPO: the reward's group advantage and the teacher's per-token one, added.

        A_it     = A_i + opd_beta * (-(lp_old - lp_T)_it)                                           [B, T]
        log r_it = lp_it - lp_old_it, clipped surrogate and aggregation as in grpo and opd

    opd_beta = 0 is exactly GRPO. The two parts are on different scales (A_i is in reward standard
    deviations, the teacher term in nats per token): opd_beta sets the exchange rate.
    Shapes: all log-probs and mask [B, T], advantages [B]. Needs teacher_logprobs.
    """
    teacher_BT = teacher_advantages(inputs, "opd_grpo")  # [B, T]
    advantages_BT = inputs.advantages.to(teacher_BT.dtype)[:, None] + cfg.opd_beta * teacher_BT  # [B, T]
    advantages_BT = kept(advantages_BT, inputs.mask != 0)
    return policy_loss(old_log_ratio(inputs), inputs, cfg, advantages_BT)


def old_log_ratio(inputs: LossInputs) -> torch.Tensor:
    """log r = lp - lp_old, zero on padding (the GRPO ratio)."""
    keep_BT = inputs.mask != 0
    return kept(inputs.student_logprobs, keep_BT) - kept(inputs.old_logprobs, keep_BT)  # [B, T]


def teacher_advantages(inputs: LossInputs, objective: str) -> torch.Tensor:
    """[B, T] per-token advantage -(lp_old - lp_T) = lp_T - lp_old, detached, zero on padding."""
    teacher_BT = require_teacher(inputs, objective)
    keep_BT = inputs.mask != 0
    return (kept(teacher_BT, keep_BT) - kept(inputs.old_logprobs, keep_BT)).detach()
