"""Offline distillation: masked NLL of (reward-filtered) teacher completions."""

from __future__ import annotations

from rladctl.objectives import base
from rladctl.objectives.base import (
    LossInputs,
    LossOutputs,
    ObjectiveConfig,
    aggregate,
    masked_mean,
)
from rladctl.objectives.ppo import kept


def sft_loss(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs:
    """Supervised fine-tuning on completions.

        nll_it = -lp_it                          [B, T]
        loss   = aggregate(nll, mask)

    Advantages, old, teacher and reference log-probs are ignored (old_logprobs may simply be the
    student's). Shapes: student_logprobs and mask [B, T], advantages [B].
    """
    keep_BT = inputs.mask != 0
    nll_BT = -kept(inputs.student_logprobs, keep_BT)  # [B, T]
    loss = aggregate(nll_BT, keep_BT, cfg.aggregation, inputs.denominators, cfg.max_completion_tokens)
    metrics = {
        base.NLL: masked_mean(nll_BT, keep_BT),
        base.NUM_TOKENS: float(keep_BT.sum()),
        base.LOSS: float(loss.detach()),
    }
    return LossOutputs(loss, metrics)
