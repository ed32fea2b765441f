"""opd_loss and opd_grpo_loss: hand-derived values, a float64 per-token loop reference, invariants."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from rladctl.errors import ConfigError
from rladctl.objectives import (
    AGGREGATIONS,
    AllRows,
    Denominators,
    LossInputs,
    ObjectiveConfig,
    get_objective_record,
    grpo_loss,
    opd_grpo_loss,
    opd_loss,
)

OPD = ObjectiveConfig(name="opd")
MIX = ObjectiveConfig(name="opd_grpo", opd_beta=0.5)


def hand_inputs():
    # lp = lp_old (r = 1). Row 0: lp_T - lp_old = [0.5, -2]. Row 1: one token, lp_T = lp_old; then padding.
    lp = torch.tensor([[-1.0, -1.0], [-2.0, 9.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[-0.5, -3.0], [-2.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]])
    return LossInputs(lp, lp.detach().clone(), torch.tensor([1.0, -1.0]), mask, teacher_logprobs=teacher)


# opd: A_t = lp_T - lp_old = row 0 [0.5, -2], row 1 [0]; r = 1, so l_t = -A_t and dl_t/dlp_t = -A_t.
#   per token: row 0 [-0.5, 2], row 1 [0]
OPD_HAND = {
    # ((-0.5 + 2)/2 + 0)/2 = 0.375; weights 1/4 (row 0), 1/2 (row 1)
    "seq-mean-token-mean": (0.375, [[-0.125, 0.5], [0.0, 0.0]]),
    # (-0.5 + 2 + 0)/3 = 0.5; weights 1/3
    "token-mean": (0.5, [[-0.5 / 3, 2 / 3], [0.0, 0.0]]),
    # ((1.5)/2 + 0/2)/2 = 0.375; weights 1/(T N) = 1/4
    "seq-mean-token-sum-norm": (0.375, [[-0.125, 0.5], [0.0, 0.0]]),
}

# opd_grpo, opd_beta = 0.5: A_t = A_i + 0.5 (lp_T - lp_old) = row 0: 1 + [0.25, -1] = [1.25, 0];
# row 1: -1 + 0 = [-1]. Per token l = -A: row 0 [-1.25, 0], row 1 [1].
MIX_HAND = {
    # ((-1.25 + 0)/2 + 1)/2 = 0.1875; weights 1/4, 1/2
    "seq-mean-token-mean": (0.1875, [[-0.3125, 0.0], [0.5, 0.0]]),
    # (-1.25 + 0 + 1)/3 = -1/12; weights 1/3
    "token-mean": (-1 / 12, [[-1.25 / 3, 0.0], [1 / 3, 0.0]]),
    # ((-1.25)/2 + 1/2)/2 = -0.0625; weights 1/4
    "seq-mean-token-sum-norm": (-0.0625, [[-0.3125, 0.0], [0.25, 0.0]]),
}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("fn,cfg,hand", [(opd_loss, OPD, OPD_HAND), (opd_grpo_loss, MIX, MIX_HAND)])
def test_hand_values(fn, cfg, hand, aggregation):
    inputs = hand_inputs()
    out = fn(inputs, dataclasses.replace(cfg, aggregation=aggregation))
    loss, grad = hand[aggregation]
    assert out.loss.item() == pytest.approx(loss, abs=1e-12)
    got = torch.autograd.grad(out.loss, inputs.student_logprobs)[0]
    assert torch.allclose(got, torch.tensor(grad, dtype=torch.float64), atol=1e-12, rtol=0)
    m = out.metrics
    # r = 1 everywhere: nothing clipped. lp - lp_T = -(lp_T - lp_old) = [-0.5, 2, 0]: mean 0.5.
    assert m["ratio_mean"] == 1.0 and m["clip_frac_low"] == m["clip_frac_high"] == 0.0
    assert m["teacher_logratio_mean"] == pytest.approx(0.5) and m["loss"] == pytest.approx(loss)


def test_hand_clipped_per_token():
    # One row, r = [2, 0.5] (lp - lp_old = [ln 2, -ln 2]); lp_T - lp_old = [0.5, 0.5], so A = +0.5 on both.
    #   token 0: r = 2 > 1.28 and A > 0: min(2 * 0.5, 1.28 * 0.5) = 0.64, the clipped branch: l = -0.64, grad 0
    #   token 1: r = 0.5, A > 0: min(0.5 * 0.5, 0.8 * 0.5) = 0.25, unclipped: l = -0.25, dl/dlp = -A r = -0.25
    # seq-mean-token-mean: (-0.64 - 0.25)/2 = -0.445; grad [0, -0.125]
    old = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    lp = (old + torch.tensor([[math.log(2.0), -math.log(2.0)]], dtype=torch.float64)).requires_grad_(True)
    x = LossInputs(lp, old, torch.zeros(1, dtype=torch.float64), torch.ones(1, 2), teacher_logprobs=old + 0.5)
    out = opd_loss(x, OPD)
    assert out.loss.item() == pytest.approx(-0.445, abs=1e-12)
    grad = torch.autograd.grad(out.loss, lp)[0]
    assert torch.allclose(grad, torch.tensor([[0.0, -0.125]], dtype=torch.float64), atol=1e-12, rtol=0)
    # A > 0 on both, r > 1 + eps_high on one: clip_frac_high 1/2, clip_frac_low 0; mean ratio 1.25
    m = out.metrics
    assert (m["clip_frac_high"], m["clip_frac_low"]) == (0.5, 0.0) and m["ratio_mean"] == pytest.approx(1.25)


@pytest.mark.parametrize("fn,name", [(opd_loss, "opd"), (opd_grpo_loss, "opd_grpo")])
def test_needs_teacher_logprobs(fn, name):
    x = hand_inputs()
    x.teacher_logprobs = None
    with pytest.raises(ConfigError, match=f"objective '{name}' needs teacher_logprobs"):
        fn(x, ObjectiveConfig(name=name))


# ---- loop reference -------------------------------------------------------------------------


def ppo_token(log_r, adv, cfg):
    r = torch.exp(log_r)
    lo, hi = 1 - cfg.eps_low, 1 + cfg.eps_high
    r_clip = r if lo <= r.item() <= hi else torch.tensor(min(max(r.item(), lo), hi), dtype=r.dtype)
    a, b = r * adv, r_clip * adv
    return -(a if a.item() <= b.item() else b)


def loop_aggregate(rows, T, cfg):
    rows = [row for row in rows if row]
    if cfg.aggregation == "token-mean":
        return sum(sum(row) for row in rows) / sum(len(row) for row in rows)
    size = {"seq-mean-token-mean": None, "seq-mean-token-sum-norm": cfg.max_completion_tokens or T}
    return sum(sum(row) / (size[cfg.aggregation] or len(row)) for row in rows) / len(rows)


def loop_opd(x, cfg, reward_weight):
    """Per token in Python floats: A = reward_weight * A_i + beta (lp_T - lp_old), beta = 1 for opd."""
    beta = cfg.opd_beta if reward_weight else 1.0
    rows = []
    for i in range(x.mask.shape[0]):
        row = []
        for t in range(x.mask.shape[1]):
            if x.mask[i, t]:
                adv = reward_weight * float(x.advantages[i]) + beta * float(
                    x.teacher_logprobs[i, t] - x.old_logprobs[i, t]
                )
                row.append(ppo_token(x.student_logprobs[i, t] - x.old_logprobs[i, t], adv, cfg))
        rows.append(row)
    return loop_aggregate(rows, x.mask.shape[1], cfg)


def random_inputs(seed, B=5, T=6):
    gen = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(B, T, generator=gen, dtype=torch.float64)
    lp = (old + 0.4 * torch.randn(B, T, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, T, generator=gen) < 0.75
    mask[:, 0], mask[-1] = True, False  # ragged rows and one empty row
    teacher = old + 1.5 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    return LossInputs(lp, old, adv, mask, teacher_logprobs=teacher)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize(
    "fn,cfg,reward_weight,seed",
    [
        (opd_loss, OPD, 0.0, 0),
        (opd_loss, dataclasses.replace(OPD, eps_low=0.1, eps_high=0.1), 0.0, 1),  # more tokens clipped
        (opd_grpo_loss, MIX, 1.0, 2),
        (opd_grpo_loss, dataclasses.replace(MIX, opd_beta=2.0), 1.0, 3),
    ],
)
def test_matches_loop_reference(fn, cfg, reward_weight, seed, aggregation):
    cfg = dataclasses.replace(cfg, aggregation=aggregation, max_completion_tokens=8)
    x = random_inputs(seed)
    got, want = fn(x, cfg).loss, loop_opd(x, cfg, reward_weight)
    assert abs(got.item() - want.item()) < 1e-10
    g_got, g_want = (torch.autograd.grad(v, x.student_logprobs)[0] for v in (got, want))
    assert torch.allclose(g_got, g_want, atol=1e-10, rtol=0)
    assert g_got.abs().sum() > 0  # the comparison is not between two zeros


# ---- invariants -----------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_zero_opd_beta_is_exactly_grpo(aggregation):
    cfg = dataclasses.replace(MIX, aggregation=aggregation, opd_beta=0.0)
    x = random_inputs(4)
    mix, grpo = opd_grpo_loss(x, cfg), grpo_loss(x, dataclasses.replace(cfg, name="grpo"))
    assert torch.equal(mix.loss, grpo.loss)
    g_mix, g_grpo = (torch.autograd.grad(o.loss, x.student_logprobs)[0] for o in (mix, grpo))
    assert torch.equal(g_mix, g_grpo)


def test_opd_ignores_the_reward_advantage():
    x, y = random_inputs(5), random_inputs(5)
    y.advantages = torch.zeros_like(y.advantages)  # a group whose rewards all agree still teaches
    out_x, out_y = opd_loss(x, OPD), opd_loss(y, OPD)
    assert out_x.loss.item() == out_y.loss.item() != 0.0


def test_a_student_equal_to_the_teacher_gets_no_gradient():
    x = random_inputs(6)
    x.teacher_logprobs = x.old_logprobs.clone()  # A = 0 on every token
    grad = torch.autograd.grad(opd_loss(x, OPD).loss, x.student_logprobs)[0]
    assert torch.equal(grad, torch.zeros_like(grad))


def test_first_update_pulls_each_token_toward_the_teacher():
    # At lp = lp_old the gradient of token t is (lp - lp_T) times its weight: descent moves lp to lp_T.
    x = random_inputs(7)
    with torch.no_grad():
        x.student_logprobs.copy_(x.old_logprobs)
    grad = torch.autograd.grad(opd_loss(x, OPD).loss, x.student_logprobs)[0]
    gap = (x.old_logprobs - x.teacher_logprobs)[x.mask]
    assert torch.equal(torch.sign(grad[x.mask]), torch.sign(gap))


@pytest.mark.parametrize("fn,cfg", [(opd_loss, OPD), (opd_grpo_loss, MIX)])
def test_masked_tokens_do_not_matter(fn, cfg):
    x, y = random_inputs(8), random_inputs(8)
    pad = ~y.mask
    with torch.no_grad():
        y.student_logprobs[pad] = float("-inf")
    y.old_logprobs[pad], y.teacher_logprobs[pad] = float("nan"), 1e6
    out_x, out_y = fn(x, cfg), fn(y, cfg)
    assert out_x.loss.item() == out_y.loss.item() and out_x.metrics == out_y.metrics
    g_x = torch.autograd.grad(out_x.loss, x.student_logprobs)[0]
    g_y = torch.autograd.grad(out_y.loss, y.student_logprobs)[0]
    assert torch.equal(g_x, g_y)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("fn,cfg", [(opd_loss, OPD), (opd_grpo_loss, MIX)])
def test_microbatches_with_global_denominators_sum_to_full_batch(fn, cfg, aggregation):
    cfg = dataclasses.replace(cfg, aggregation=aggregation)
    x = random_inputs(9, B=6)
    full = fn(x, cfg).loss
    slices = [slice(0, 4), slice(4, 6)]
    den = Denominators.of(x.mask[slices[0]]) + Denominators.of(x.mask[slices[1]])
    parts = sum(fn(microbatch(x, s, den), cfg).loss for s in slices)
    assert abs(parts.item() - full.item()) < 1e-12


def microbatch(x, rows, den):
    """Rows ``rows`` of x as one micro-batch of a step whose totals are ``den``."""
    cut = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    cut = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in cut.items()}
    return LossInputs(**{**cut, "denominators": den})


@pytest.mark.parametrize("name", ["opd", "opd_grpo"])
def test_train_keeps_every_row_even_where_rewards_agree(name):
    # Groups "a" (rewards all 0) and "c" (all 1) give GRPO nothing; the teacher's advantage still teaches.
    record = get_objective_record(name)
    rewards = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    keep = record.row_filter.keep(rewards, ["a", "a", "b", "b", "c", "c"], train_cfg=None)
    assert isinstance(record.row_filter, AllRows) and keep.dtype == bool and keep.all() and len(keep) == 6


def test_opd_beta_is_checked():
    with pytest.raises(ConfigError, match="opd_beta"):
        ObjectiveConfig(name="opd_grpo", opd_beta=-0.5)
