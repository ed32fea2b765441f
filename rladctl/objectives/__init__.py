"""Objectives: pure tensor functions with one signature, and one registry of records (DESIGN §4).

    from rladctl.objectives import LossInputs, ObjectiveConfig, get_objective
    out = get_objective(cfg.name)(LossInputs(...), cfg)   # out.loss, out.metrics

Each registry entry is an ``Objective`` record: the loss, and what the stages do around it (does
train need teacher log-probs; who samples in `rladctl run`; which rows train keeps; which config
fields change per optimizer step; the method label of `rladctl compare`). The stages ask
``get_objective_record(name)`` and never name an objective.

Adding an objective: one module with ``fn(inputs: LossInputs, cfg: ObjectiveConfig) -> LossOutputs``,
one ``Objective(...)`` line below, and its test file. Another package can ``register`` its own.
"""

from __future__ import annotations

from rladctl.objectives.base import (
    AGGREGATIONS,
    OBJECTIVES,
    AllRows,
    Denominators,
    LossFn,
    LossInputs,
    LossOutputs,
    Objective,
    ObjectiveConfig,
    RewardThreshold,
    RowFilter,
    aggregate,
    register,
    unknown_name_error,
)
from rladctl.objectives.grpo import grpo_loss
from rladctl.objectives.kdrl import kdrl_beta, kdrl_loss, kdrl_schedule
from rladctl.objectives.opd import opd_grpo_loss, opd_loss
from rladctl.objectives.sft import sft_loss
from rladctl.objectives.trrd import trrd_loss

# The paper's method, then its baselines: `rladctl compare` lists its methods in this order.
register(
    Objective(name="trrd", loss=trrd_loss, method="rlad", needs_teacher_logprobs=True),
    Objective(name="grpo", loss=grpo_loss, method="grpo"),
    Objective(name="kdrl", loss=kdrl_loss, method="kdrl", needs_teacher_logprobs=True, schedule=kdrl_schedule),
    # Offline distillation: the teacher samples, and train keeps the rows it got right.
    Objective(
        name="sft", loss=sft_loss, method="offline", sampler="teacher", row_filter=RewardThreshold("sft_min_reward")
    ),
    # On-policy distillation: the teacher's per-token log-ratio is the advantage, so no row is dropped.
    Objective(name="opd", loss=opd_loss, method="opd", needs_teacher_logprobs=True, row_filter=AllRows()),
    Objective(
        name="opd_grpo", loss=opd_grpo_loss, method="opd_grpo", needs_teacher_logprobs=True, row_filter=AllRows()
    ),
)


def get_objective_record(name: str) -> Objective:
    """The registry's record of objective ``name``; an unknown name lists the valid ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise unknown_name_error("objective", name, OBJECTIVES, "in [objective] name") from None


def get_objective(name: str) -> LossFn:
    """The loss function of objective ``name``, for any trainer: ``get_objective_record(name).loss``."""
    return get_objective_record(name).loss


def method_objectives() -> dict[str, str]:
    """Method label -> objective name, in registry order: each record carries its label as
    `rladctl compare` and the demo name it (rlad is trrd; offline is distillation from reward-filtered
    teacher samples)."""
    return {objective.method: name for name, objective in OBJECTIVES.items()}


__all__ = [
    "AGGREGATIONS",
    "OBJECTIVES",
    "AllRows",
    "Denominators",
    "LossFn",
    "LossInputs",
    "LossOutputs",
    "Objective",
    "ObjectiveConfig",
    "RewardThreshold",
    "RowFilter",
    "aggregate",
    "get_objective",
    "get_objective_record",
    "grpo_loss",
    "kdrl_beta",
    "kdrl_loss",
    "kdrl_schedule",
    "method_objectives",
    "opd_grpo_loss",
    "opd_loss",
    "register",
    "sft_loss",
    "trrd_loss",
]
