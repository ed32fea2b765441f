"""What every objective takes and returns, the record the registry keeps per objective, and the
one token-aggregation function (DESIGN §4).

Shapes: B rows (completions), T completion tokens (right-padded). Log-probs are those of the
sampled token only. ``mask`` is 1 on completion tokens and 0 on padding; values at padded
positions may be anything (even -inf or NaN): objectives never let them reach the loss or grad.

The registry's table ``OBJECTIVES`` lives here, beside ``ObjectiveConfig`` which checks names
against it, and ``rladctl/objectives/__init__.py`` fills it: this module, which every objective
imports, never imports the objectives, so the package has no import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from rladctl.errors import ConfigError, close_matches

# Metric names (keys of LossOutputs.metrics). Every metric is a token mean over this micro-batch's
# completion tokens unless said otherwise; objectives report only those that mean something.
LOSS = "loss"  # the returned loss (this micro-batch's contribution when denominators are given)
PG_LOSS = "pg_loss"  # the clipped policy-gradient part alone, aggregated like the loss
CLIP_FRAC_LOW = "clip_frac_low"  # A < 0 and r < 1 - eps_low: the clip holds the ratio up
CLIP_FRAC_HIGH = "clip_frac_high"  # A > 0 and r > 1 + eps_high: the clip holds the ratio down
RATIO_MEAN = "ratio_mean"  # the objective's own ratio (TRRD: against the mixed anchor)
APPROX_KL_OLD = "approx_kl_old"  # k3 estimate of KL(old || student): exp(x) - 1 - x, x = lp - lp_old
TEACHER_LOGRATIO_MEAN = "teacher_logratio_mean"  # lp - lp_T, unclamped; reported when teacher given
TEACHER_CLAMP_FRAC = "teacher_clamp_frac"  # trrd: |lp - lp_T| > clamp
KL_TEACHER = "kl_teacher"  # kdrl: k2 estimate 0.5 * (lp - lp_T)^2
KL_BETA = "kl_beta"  # kdrl: the coefficient used for this batch (annealing shows in the logs)
KL_REF = "kl_ref"  # when ref_beta > 0: k3 estimate of KL(student || reference)
NLL = "nll"  # sft: -lp
NUM_TOKENS = "num_tokens"  # completion tokens in this micro-batch (a count, for weighting means)

AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
CLAMP_MODES = ("hard", "straight_through")


@dataclass(frozen=True)
class ObjectiveConfig:
    """The [objective] recipe table. Plain field types only: a generic TOML loader fills it."""

    name: str = "trrd"  # a key of rladctl.objectives.OBJECTIVES: trrd | grpo | kdrl | sft | opd | opd_grpo
    alpha: float = 0.5  # trrd: weight of the old policy in the anchor; 1 = GRPO, 0 = teacher only
    clamp: float = 1.0  # trrd: c, bound on |lp - lp_T| before the PPO clip (paper App. B)
    clamp_mode: Literal["hard", "straight_through"] = "hard"  # trrd: does the clamp stop the grad?
    eps_low: float = 0.2  # PPO clip: r >= 1 - eps_low when A < 0 (paper, logic setting)
    eps_high: float = 0.28  # PPO clip: r <= 1 + eps_high when A > 0 (clip-higher)
    kl_beta: float = 0.002  # kdrl only: coefficient of the k2 teacher KL (KDRL paper: ~2e-3)
    kl_beta_end: float | None = None  # kdrl: anneal linearly kl_beta -> kl_beta_end; None = constant
    opd_beta: float = 1.0  # opd_grpo only: A_t = A_i + opd_beta * (lp_T - lp_old)_t; 0 = GRPO
    ref_beta: float = 0.0  # grpo/trrd/kdrl/opd: + ref_beta * k3 KL(student || reference); 0 = off
    aggregation: Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"] = (
        "seq-mean-token-mean"  # the paper's Eq. 1
    )
    max_completion_tokens: int = 0  # seq-mean-token-sum-norm divisor; 0 = the batch's T

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise unknown_name_error("objective", self.name, OBJECTIVES, "in [objective] name")
        if self.aggregation not in AGGREGATIONS:  # the loader checks Literals; direct callers too
            raise unknown_name_error("aggregation", self.aggregation, AGGREGATIONS, "in [objective]")
        if self.clamp_mode not in CLAMP_MODES:
            raise unknown_name_error("clamp_mode", self.clamp_mode, CLAMP_MODES, "in [objective]")
        for key, ok, rule in (
            ("alpha", 0.0 <= self.alpha <= 1.0, "must lie in [0, 1] (1 = GRPO)"),
            ("clamp", self.clamp > 0.0, "must be > 0"),
            ("eps_low", 0.0 <= self.eps_low < 1.0, "must lie in [0, 1)"),
            ("eps_high", self.eps_high >= 0.0, "must be >= 0"),
            ("kl_beta", self.kl_beta >= 0.0, "must be >= 0"),
            ("kl_beta_end", self.kl_beta_end is None or self.kl_beta_end >= 0.0, "must be >= 0"),
            ("opd_beta", self.opd_beta >= 0.0, "must be >= 0 (0 = GRPO)"),
            ("ref_beta", self.ref_beta >= 0.0, "must be >= 0"),
            ("max_completion_tokens", self.max_completion_tokens >= 0, "must be >= 0 (0 = T)"),
        ):
            if not ok:
                value = getattr(self, key)
                raise ConfigError(f"objective.{key} is {value!r}", "in [objective]", f"{key} {rule}")


@dataclass(frozen=True)
class Denominators:
    """Totals over the WHOLE optimizer step (every micro-batch on every rank).

    With them, ``aggregate`` returns one micro-batch's contribution, and the contributions sum to
    the loss of the whole step. Build them with ``Denominators.of(mask)`` per micro-batch, add them
    up, and all-reduce the two numbers across ranks. Under DDP, which averages gradients over
    ranks, multiply each rank's loss by the world size to keep the global mean.
    """

    num_tokens: float  # completion tokens
    num_seqs: float  # sequences with at least one completion token

    @classmethod
    def of(cls, mask_BT: torch.Tensor) -> Denominators:
        tokens_B = (mask_BT != 0).sum(-1)  # [B]
        return cls(float(tokens_B.sum()), float((tokens_B > 0).sum()))

    def __add__(self, other: Denominators) -> Denominators:
        return Denominators(self.num_tokens + other.num_tokens, self.num_seqs + other.num_seqs)


@dataclass
class LossInputs:
    """One micro-batch. Names say where each log-prob came from (DESIGN §4)."""

    student_logprobs: torch.Tensor  # [B, T] lp, under the weights being trained (has grad)
    old_logprobs: torch.Tensor  # [B, T] lp_old, the policy that produced the rollout
    advantages: torch.Tensor  # [B] one per completion, broadcast to its tokens
    mask: torch.Tensor  # [B, T] bool or 0/1 float, 1 = completion token
    teacher_logprobs: torch.Tensor | None = None  # [B, T] lp_T, from score-teacher
    ref_logprobs: torch.Tensor | None = None  # [B, T] frozen reference, for ref_beta > 0
    denominators: Denominators | None = None  # None = normalise by this batch alone

    def __post_init__(self) -> None:
        shape = tuple(self.student_logprobs.shape)
        if len(shape) != 2:
            raise ValueError(f"student_logprobs must be [B, T], got {shape}")
        for name in ("old_logprobs", "mask", "teacher_logprobs", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, student_logprobs {shape}")
        if tuple(self.advantages.shape) != shape[:1]:
            raise ValueError(f"advantages must be [B] = {shape[:1]}, got {tuple(self.advantages.shape)}")


@dataclass
class LossOutputs:
    loss: torch.Tensor  # scalar, differentiable wrt student_logprobs
    metrics: dict[str, float] = field(default_factory=dict)  # detached; keys are the names above


def aggregate(
    values_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    mode: str,
    denominators: Denominators | None = None,
    max_tokens: int = 0,
) -> torch.Tensor:
    """Reduce per-token values to a scalar.

    seq-mean-token-mean      (1/N_seq) sum_i (1/|o_i|) sum_t v_it      paper Eq. 1
    token-mean               (1/N_tok) sum_i sum_t v_it                 global token mean
    seq-mean-token-sum-norm  (1/N_seq) sum_i (1/L) sum_t v_it           Dr. GRPO, L = max_tokens or T

    N_seq, N_tok come from ``denominators`` (whole step) or this batch. Sequences without
    completion tokens contribute 0 and are not counted in N_seq. Keep L fixed (max_tokens) when
    micro-batches are padded to different T, or the contributions will not sum to the step loss.
    """
    if mode not in AGGREGATIONS:
        raise unknown_name_error("aggregation", mode, AGGREGATIONS, "in [objective] aggregation")
    keep_BT = mask_BT != 0
    values_BT = values_BT.masked_fill(~keep_BT, 0.0)  # [B, T] padding may hold NaN/inf
    den = denominators if denominators is not None else Denominators.of(mask_BT)
    if mode == "token-mean":
        return values_BT.sum() / max(den.num_tokens, 1.0)
    sums_B = values_BT.sum(-1)  # [B]
    if mode == "seq-mean-token-mean":
        per_seq_B = sums_B / keep_BT.sum(-1).clamp(min=1).to(sums_B.dtype)  # [B]
    else:
        per_seq_B = sums_B / float(max_tokens or values_BT.shape[-1])  # [B]
    return per_seq_B.sum() / max(den.num_seqs, 1.0)


def masked_mean(values_BT: torch.Tensor, keep_BT: torch.Tensor) -> float:
    """Token mean under the mask as a float, for metrics (0.0 when no token is kept)."""
    kept = values_BT.detach()[keep_BT]
    return float(kept.double().mean()) if kept.numel() else 0.0


def unknown_name_error(kind: str, name: str, valid, where: str) -> ConfigError:
    hint = close_matches(name, valid)
    listing = f"valid {kind}s: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown {kind} '{name}'", where, f"{hint} {listing}" if hint else listing)


# ---- the registry: per objective, what the stages around the loss must do -------------------------

LossFn = Callable[[LossInputs, ObjectiveConfig], LossOutputs]
# (cfg, step, total_steps) -> {ObjectiveConfig field: its value at 0-based optimizer step `step` of total_steps}
Schedule = Callable[[ObjectiveConfig, int, int], dict[str, float]]
SAMPLERS = ("student", "teacher")


class RowFilter(Protocol):
    """Which training rows an objective keeps, in place of train's default (drop the groups whose
    rewards all agree, when train.drop_zero_std_groups). ``train_cfg`` is a rladctl.config.TrainConfig."""

    def keep(self, rewards_B: np.ndarray, prompt_ids_B: Sequence, train_cfg: Any) -> np.ndarray:
        """[B] bool, True for the rows to train on, over one artifact's rows."""
        ...

    def nothing_left(self, train_cfg: Any) -> str:
        """Why no row was kept, for train's "nothing to train on" error."""
        ...


@dataclass(frozen=True)
class RewardThreshold:
    """A RowFilter: keep the rows whose reward reaches ``train.<key>`` (whatever their group)."""

    key: str  # a [train] field, e.g. "sft_min_reward"

    def keep(self, rewards_B: np.ndarray, prompt_ids_B: Sequence, train_cfg: Any) -> np.ndarray:
        return rewards_B >= getattr(train_cfg, self.key)  # [B]

    def nothing_left(self, train_cfg: Any) -> str:
        return f"no row reaches train.{self.key}={getattr(train_cfg, self.key)}"


@dataclass(frozen=True)
class AllRows:
    """A RowFilter that keeps every row, for objectives that teach where the rewards agree (opd:
    its per-token teacher advantage is not zero on a group whose rewards are all equal)."""

    def keep(self, rewards_B: np.ndarray, prompt_ids_B: Sequence, train_cfg: Any) -> np.ndarray:
        return np.ones(len(rewards_B), dtype=bool)  # [B]

    def nothing_left(self, train_cfg: Any) -> str:
        return "the inputs have no rows"


@dataclass(frozen=True, kw_only=True)
class Objective:
    """One registry entry: the loss, and what the stages must do around it. The stages ask this
    record (``rladctl.objectives.get_objective_record``); they never name an objective."""

    name: str  # [objective] name in a recipe
    loss: LossFn  # the pure tensor function
    method: str  # its label in `rladctl compare` and on the results page
    needs_teacher_logprobs: bool = False  # train refuses rollouts that score-teacher has not scored
    sampler: Literal["student", "teacher"] = "student"  # who samples the rollouts in `rladctl run`
    row_filter: RowFilter | None = None  # None: train's default (zero-variance groups dropped)
    schedule: Schedule | None = None  # config fields that change per optimizer step, logged in the metrics

    def __post_init__(self) -> None:
        if not (self.name and self.method):
            raise ValueError(f"objective {self.name!r}: name and method must be non-empty")
        if not callable(self.loss):
            raise ValueError(f"objective '{self.name}': loss must be fn(inputs, cfg) -> LossOutputs")
        if self.sampler not in SAMPLERS:
            raise unknown_name_error("sampler", self.sampler, SAMPLERS, f"for objective '{self.name}'")

    @property
    def needs_teacher_model(self) -> bool:
        """`rladctl run` needs run.teacher: to score the student's rollouts, or to sample them."""
        return self.needs_teacher_logprobs or self.sampler == "teacher"

    def scheduled(self, cfg: ObjectiveConfig, step: int, total_steps: int) -> dict[str, float]:
        """The scheduled config fields at 0-based optimizer ``step`` of ``total_steps`` ({} when none)."""
        return {} if self.schedule is None else dict(self.schedule(cfg, step, total_steps))

    def config_at(self, cfg: ObjectiveConfig, step: int, total_steps: int) -> ObjectiveConfig:
        """``cfg`` for optimizer ``step``: its scheduled fields set; ``cfg`` itself when none are."""
        changes = self.scheduled(cfg, step, total_steps)
        return dataclasses.replace(cfg, **changes) if changes else cfg


# Objective name -> record, in registration order; rladctl/objectives/__init__.py fills it.
OBJECTIVES: dict[str, Objective] = {}


def register(*objectives: Objective) -> None:
    """Add objectives to the registry (other people's too), all or none: a name or a method label
    that is already taken is refused."""
    names, methods = set(OBJECTIVES), {o.method for o in OBJECTIVES.values()}
    for objective in objectives:
        for kind, value, taken in (("name", objective.name, names), ("method", objective.method, methods)):
            if value in taken:
                raise ValueError(f"an objective with {kind} '{value}' is already registered")
            taken.add(value)
    OBJECTIVES.update((objective.name, objective) for objective in objectives)
