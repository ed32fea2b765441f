"""GRPO: the clipped group-relative policy gradient (DESIGN §4; paper Eq. 1-2)."""

from __future__ import annotations

from rladctl.objectives.base import LossInputs, LossOutputs, ObjectiveConfig
from rladctl.objectives.ppo import kept, policy_loss


def grpo_loss(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs:
    """GRPO with asymmetric clipping.

        log r_it = lp_it - lp_old_it                                             [B, T]
        l_it     = -min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i)     [B, T]
        loss     = aggregate(l, mask) (+ ref_beta * aggregate(k3 KL to reference))

    Shapes: student/old logprobs and mask [B, T], advantages [B]. Teacher log-probs are not used
    (only reported as ``teacher_logratio_mean`` when present).
    """
    keep_BT = inputs.mask != 0
    log_ratio_BT = kept(inputs.student_logprobs, keep_BT) - kept(inputs.old_logprobs, keep_BT)
    return policy_loss(log_ratio_BT, inputs, cfg)
