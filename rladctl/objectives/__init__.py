"""Objectives: pure tensor functions with one signature, chosen from one registry (DESIGN §4).

    from rladctl.objectives import LossInputs, ObjectiveConfig, get_objective
    out = get_objective(cfg.name)(LossInputs(...), cfg)   # out.loss, out.metrics

Adding an objective: one module with ``fn(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs``
and one line below (plus NEEDS_TEACHER if it reads teacher_logprobs).
"""

from __future__ import annotations

from typing import Callable

from rladctl.objectives.base import (
    AGGREGATIONS,
    Denominators,
    LossInputs,
    LossOutputs,
    ObjectiveConfig,
    aggregate,
    unknown_name_error,
)
from rladctl.objectives.grpo import grpo_loss
from rladctl.objectives.kdrl import kdrl_beta, kdrl_loss
from rladctl.objectives.sft import sft_loss
from rladctl.objectives.trrd import trrd_loss

Objective = Callable[[LossInputs, ObjectiveConfig], LossOutputs]

OBJECTIVES: dict[str, Objective] = {
    "grpo": grpo_loss,
    "trrd": trrd_loss,
    "kdrl": kdrl_loss,
    "sft": sft_loss,
}

# Objectives that read teacher_logprobs: train refuses rollouts that were not teacher-scored.
NEEDS_TEACHER = frozenset({"trrd", "kdrl"})


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise unknown_name_error("objective", name, OBJECTIVES, "in [objective] name") from None


__all__ = [
    "AGGREGATIONS",
    "NEEDS_TEACHER",
    "OBJECTIVES",
    "Denominators",
    "LossInputs",
    "LossOutputs",
    "Objective",
    "ObjectiveConfig",
    "aggregate",
    "get_objective",
    "grpo_loss",
    "kdrl_beta",
    "kdrl_loss",
    "sft_loss",
    "trrd_loss",
]
