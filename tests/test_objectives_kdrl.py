"""kdrl_loss, kdrl_beta and kdrl's per-step config: hand-derived values, a per-token loop reference, invariants."""

import dataclasses

import pytest
import torch

from rladctl.errors import ConfigError
from rladctl.objectives import (
    AGGREGATIONS,
    Denominators,
    LossInputs,
    ObjectiveConfig,
    get_objective_record,
    grpo_loss,
    kdrl_beta,
    kdrl_loss,
)

CFG = ObjectiveConfig(name="kdrl", kl_beta=0.1)


def hand_inputs():
    # lp = lp_old (r = 1). Row 0: A = +1, lp - lp_T = [1, -2]. Row 1: A = -1, one token, lp = lp_T.
    lp = torch.tensor([[-1.0, -1.0], [-2.0, 9.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[-2.0, 1.0], [-2.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]])
    return LossInputs(lp, lp.detach().clone(), torch.tensor([1.0, -1.0]), mask, teacher_logprobs=teacher)


# Per token: pg = -r A = -A; k2 = 0.5 (lp - lp_T)^2; total = pg + 0.1 k2.
#   row 0: k2 = [0.5, 2]   -> [-1 + 0.05, -1 + 0.2] = [-0.95, -0.8]
#   row 1: k2 = [0]        -> [1]
# d total / d lp = -A + 0.1 (lp - lp_T): row 0 [-0.9, -1.2], row 1 [1]; times each token's weight.
HAND = {
    # ((-0.95 - 0.8)/2 + 1)/2 = 0.0625; weights 1/4 (row 0), 1/2 (row 1)
    "seq-mean-token-mean": (0.0625, [[-0.225, -0.3], [0.5, 0.0]]),
    # (-0.95 - 0.8 + 1)/3 = -0.25; weights 1/3
    "token-mean": (-0.25, [[-0.3, -0.4], [1 / 3, 0.0]]),
    # ((-1.75)/2 + 1/2)/2 = -0.1875; weights 1/(T N) = 1/4
    "seq-mean-token-sum-norm": (-0.1875, [[-0.225, -0.3], [0.25, 0.0]]),
}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_hand_values(aggregation):
    inputs = hand_inputs()
    out = kdrl_loss(inputs, dataclasses.replace(CFG, aggregation=aggregation))
    loss, grad = HAND[aggregation]
    assert out.loss.item() == pytest.approx(loss, abs=1e-12)
    got = torch.autograd.grad(out.loss, inputs.student_logprobs)[0]
    assert torch.allclose(got, torch.tensor(grad, dtype=torch.float64), atol=1e-12, rtol=0)
    m = out.metrics
    # k2 mean (0.5 + 2 + 0)/3; gap mean (1 - 2 + 0)/3; pg alone: seq-mean (-1 + 1)/2 = 0 etc.
    assert m["kl_teacher"] == pytest.approx(2.5 / 3) and m["teacher_logratio_mean"] == pytest.approx(-1 / 3)
    assert m["kl_beta"] == 0.1 and m["ratio_mean"] == 1.0 and m["loss"] == pytest.approx(loss)


def test_needs_teacher_logprobs():
    x = hand_inputs()
    x.teacher_logprobs = None
    with pytest.raises(ConfigError, match="objective 'kdrl' needs teacher_logprobs"):
        kdrl_loss(x, CFG)


def test_beta_schedule():
    # 5e-3 -> 1e-3 over 5 steps: 1e-3 per step, held after the end.
    cfg = ObjectiveConfig(name="kdrl", kl_beta=5e-3, kl_beta_end=1e-3)
    got = [kdrl_beta(cfg, step, 5) for step in range(7)]
    assert got == pytest.approx([5e-3, 4e-3, 3e-3, 2e-3, 1e-3, 1e-3, 1e-3], abs=1e-15)
    assert kdrl_beta(ObjectiveConfig(name="kdrl", kl_beta=2e-3), 3, 10) == 2e-3
    assert kdrl_beta(cfg, 0, 1) == 5e-3


def test_the_record_anneals_kl_beta_per_step_and_logs_it():
    # 5e-3 -> 1e-3 over 5 steps: step 0 (first) 5e-3, step 2 (middle) 3e-3, step 4 (last) 1e-3.
    kdrl = get_objective_record("kdrl")
    cfg = ObjectiveConfig(name="kdrl", kl_beta=5e-3, kl_beta_end=1e-3, alpha=0.7, ref_beta=0.01)
    for step, beta in ((0, 5e-3), (2, 3e-3), (4, 1e-3)):
        step_cfg = kdrl.config_at(cfg, step, 5)
        assert step_cfg.kl_beta == kdrl_beta(cfg, step, 5) == pytest.approx(beta, abs=1e-15)
        assert step_cfg == dataclasses.replace(cfg, kl_beta=step_cfg.kl_beta)  # nothing else changes
        assert kdrl.scheduled(cfg, step, 5) == {"kl_beta": step_cfg.kl_beta}  # train logs it under "kl_beta"
    assert kdrl.config_at(cfg, 0, 5) is not cfg and cfg.kl_beta == 5e-3  # the recipe's config is left alone
    # A constant beta is logged too (train writes kl_beta on every kdrl step).
    constant = ObjectiveConfig(name="kdrl", kl_beta=2e-3)
    assert kdrl.scheduled(constant, 3, 10) == {"kl_beta": 2e-3} and kdrl.config_at(constant, 3, 10) == constant


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


def loop_kdrl(x, cfg):
    rows = []
    for i in range(x.mask.shape[0]):
        row = []
        for t in range(x.mask.shape[1]):
            if x.mask[i, t]:
                lp = x.student_logprobs[i, t]
                kl = 0.5 * (lp - x.teacher_logprobs[i, t]) ** 2
                row.append(ppo_token(lp - x.old_logprobs[i, t], float(x.advantages[i]), cfg) + cfg.kl_beta * kl)
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
@pytest.mark.parametrize("kl_beta,seed", [(0.002, 0), (0.3, 1)])
def test_matches_loop_reference(aggregation, kl_beta, seed):
    cfg = ObjectiveConfig(name="kdrl", aggregation=aggregation, kl_beta=kl_beta, max_completion_tokens=8)
    x = random_inputs(seed)
    got, want = kdrl_loss(x, cfg).loss, loop_kdrl(x, cfg)
    assert abs(got.item() - want.item()) < 1e-10
    g_got, g_want = (torch.autograd.grad(v, x.student_logprobs)[0] for v in (got, want))
    assert torch.allclose(g_got, g_want, atol=1e-10, rtol=0)


# ---- invariants -----------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_zero_beta_is_exactly_grpo(aggregation):
    cfg = ObjectiveConfig(name="kdrl", aggregation=aggregation, kl_beta=0.0)
    x = random_inputs(2)
    kdrl, grpo = kdrl_loss(x, cfg), grpo_loss(x, dataclasses.replace(cfg, name="grpo"))
    assert torch.equal(kdrl.loss, grpo.loss)
    g_kdrl, g_grpo = (torch.autograd.grad(o.loss, x.student_logprobs)[0] for o in (kdrl, grpo))
    assert torch.equal(g_kdrl, g_grpo)


def test_masked_tokens_do_not_matter():
    x, y = random_inputs(3), random_inputs(3)
    pad = ~y.mask
    with torch.no_grad():
        y.student_logprobs[pad] = float("-inf")
    y.old_logprobs[pad], y.teacher_logprobs[pad] = float("nan"), 1e6
    out_x, out_y = kdrl_loss(x, CFG), kdrl_loss(y, CFG)
    assert out_x.loss.item() == out_y.loss.item() and out_x.metrics == out_y.metrics
    g_x = torch.autograd.grad(out_x.loss, x.student_logprobs)[0]
    g_y = torch.autograd.grad(out_y.loss, y.student_logprobs)[0]
    assert torch.equal(g_x, g_y)


def test_teacher_term_pulls_toward_the_teacher():
    # A = 0 leaves only the KL: the gradient step -grad moves lp toward lp_T.
    x = random_inputs(4)
    x.advantages = torch.zeros(5, dtype=torch.float64)
    grad = torch.autograd.grad(kdrl_loss(x, CFG).loss, x.student_logprobs)[0]
    gap = (x.student_logprobs - x.teacher_logprobs).detach()
    assert torch.equal(torch.sign(grad[x.mask]), torch.sign(gap[x.mask]))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_microbatches_with_global_denominators_sum_to_full_batch(aggregation):
    cfg = dataclasses.replace(CFG, aggregation=aggregation)
    x = random_inputs(5, B=6)
    full = kdrl_loss(x, cfg).loss
    slices = [slice(0, 4), slice(4, 6)]
    den = Denominators.of(x.mask[slices[0]]) + Denominators.of(x.mask[slices[1]])
    parts = sum(kdrl_loss(microbatch(x, s, den), cfg).loss for s in slices)
    assert abs(parts.item() - full.item()) < 1e-12


def microbatch(x, rows, den):
    """Rows ``rows`` of x as one micro-batch of a step whose totals are ``den``."""
    cut = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    cut = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in cut.items()}
    return LossInputs(**{**cut, "denominators": den})
