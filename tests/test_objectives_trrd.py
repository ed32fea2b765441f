"""trrd_loss: hand-derived values, a per-token loop reference, invariants (alpha = 1 is GRPO)."""

import dataclasses
import math

import pytest
import torch

from rladctl.errors import ConfigError
from rladctl.objectives import (
    AGGREGATIONS,
    Denominators,
    LossInputs,
    ObjectiveConfig,
    grpo_loss,
    trrd_loss,
)

CFG = ObjectiveConfig(name="trrd")  # alpha 0.5, c = 1, hard clamp, eps 0.2 / 0.28
MODES = ("hard", "straight_through")


def hand_inputs():
    # One completion, A = +1, lp = lp_old (policy term 0), lp - lp_T = [0.4, 3, -3].
    lp = torch.tensor([[-1.0, -1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[-1.4, -4.0, 2.0]], dtype=torch.float64)
    return LossInputs(lp, lp.detach().clone(), torch.ones(1), torch.ones(1, 3), teacher_logprobs=teacher)


@pytest.mark.parametrize("clamp_mode", MODES)
def test_hand_values(clamp_mode):
    # log r = 0.5 * 0 + 0.5 * clamp(lp - lp_T, -1, 1):
    #   t0 clamp(0.4) = 0.4  -> log r = 0.2,  r = 1.2214 < 1.28 -> -1.2214
    #   t1 clamp(3)   = 1    -> log r = 0.5,  r = 1.6487 > 1.28 -> -1.28   (PPO clip)
    #   t2 clamp(-3)  = -1   -> log r = -0.5, r = 0.6065, A > 0 -> -0.6065 (unclipped)
    #   mean: -(1.2214 + 1.28 + 0.6065) / 3 = -1.035977806; the same in both clamp modes.
    inputs = hand_inputs()
    out = trrd_loss(inputs, dataclasses.replace(CFG, clamp_mode=clamp_mode))
    assert out.loss.item() == pytest.approx(-1.035977805957601, abs=1e-12)
    # d loss / d lp = -(r A / 3) * d log r / d lp, where d log r / d lp = alpha + (1 - alpha) * d clamp:
    #   t0 inside the clamp: 0.5 + 0.5 = 1 -> -1.2214 / 3 = -0.407134
    #   t1 PPO-clipped: 0
    #   t2 saturated: hard keeps alpha = 0.5 -> -0.6065 * 0.5 / 3 = -0.101088;
    #                 straight_through keeps 1 -> -0.6065 / 3 = -0.202177
    (grad,) = torch.autograd.grad(out.loss, inputs.student_logprobs)
    t2 = -0.10108844328543891 if clamp_mode == "hard" else -0.20217688657087782
    want = torch.tensor([[-0.4071342527200566, 0.0, t2]], dtype=torch.float64)
    assert torch.allclose(grad, want, atol=1e-12, rtol=0)
    m = out.metrics
    assert m["teacher_clamp_frac"] == pytest.approx(2 / 3) and m["teacher_logratio_mean"] == pytest.approx(0.4 / 3)
    assert m["clip_frac_high"] == pytest.approx(1 / 3) and m["clip_frac_low"] == 0.0
    # ratio mean (e^0.2 + e^0.5 + e^-0.5) / 3; approx_kl_old 0 because lp = lp_old
    assert m["ratio_mean"] == pytest.approx((math.exp(0.2) + math.exp(0.5) + math.exp(-0.5)) / 3, abs=1e-12)
    assert m["approx_kl_old"] == 0.0


def test_alpha_mixes_old_and_teacher_terms_by_hand():
    # lp - lp_old = 0.2, lp - lp_T = -0.6, alpha = 0.25, A = -1:
    #   log r = 0.25 * 0.2 + 0.75 * (-0.6) = 0.05 - 0.45 = -0.4, r = e^-0.4 = 0.67032 < 0.8
    #   A < 0: -min(-0.67032, -0.8) = 0.8 (clipped low), gradient 0
    lp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    old, teacher = torch.tensor([[-1.2]], dtype=torch.float64), torch.tensor([[-0.4]], dtype=torch.float64)
    inputs = LossInputs(lp, old, torch.tensor([-1.0]), torch.ones(1, 1), teacher_logprobs=teacher)
    out = trrd_loss(inputs, dataclasses.replace(CFG, alpha=0.25))
    assert out.loss.item() == pytest.approx(0.8, abs=1e-12)
    assert out.metrics["ratio_mean"] == pytest.approx(math.exp(-0.4), abs=1e-12)
    assert out.metrics["clip_frac_low"] == 1.0
    assert torch.autograd.grad(out.loss, lp)[0].item() == 0.0


def test_needs_teacher_logprobs():
    x = hand_inputs()
    x.teacher_logprobs = None
    with pytest.raises(ConfigError, match="objective 'trrd' needs teacher_logprobs.*score-teacher"):
        trrd_loss(x, CFG)


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


def teacher_term(d, cfg):
    """clamp(d, -c, c) token by token; a saturated token is a constant (hard) or d plus a constant
    offset (straight_through)."""
    c = cfg.clamp
    if -c <= d.item() <= c:
        return d
    bound = c if d.item() > c else -c
    if cfg.clamp_mode == "hard":
        return torch.tensor(bound, dtype=d.dtype)
    return d + (bound - d.item())


def loop_trrd(x, cfg):
    rows = []
    for i in range(x.mask.shape[0]):
        row = []
        for t in range(x.mask.shape[1]):
            if not x.mask[i, t]:
                continue
            lp = x.student_logprobs[i, t]
            log_r = cfg.alpha * (lp - x.old_logprobs[i, t]) + (1 - cfg.alpha) * teacher_term(
                lp - x.teacher_logprobs[i, t], cfg
            )
            token = ppo_token(log_r, float(x.advantages[i]), cfg)
            if cfg.ref_beta:
                k = x.ref_logprobs[i, t] - lp
                token = token + cfg.ref_beta * (torch.exp(k) - k - 1)
            row.append(token)
        rows.append(row)
    return loop_aggregate(rows, x.mask.shape[1], cfg)


def random_inputs(seed, B=5, T=6):
    gen = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(B, T, generator=gen, dtype=torch.float64)
    lp = (old + 0.4 * torch.randn(B, T, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    adv[1] = 0.0
    mask = torch.rand(B, T, generator=gen) < 0.75
    mask[:, 0], mask[-1] = True, False  # ragged rows and one empty row
    teacher = old + 1.5 * torch.randn(B, T, generator=gen, dtype=torch.float64)  # some |gap| > 1
    ref = old + 0.3 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    return LossInputs(lp, old, adv, mask, teacher_logprobs=teacher, ref_logprobs=ref)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("clamp_mode", MODES)
@pytest.mark.parametrize("alpha,ref_beta,seed", [(0.5, 0.0, 0), (0.3, 0.05, 1), (0.9, 0.0, 2), (0.0, 0.0, 3)])
def test_matches_loop_reference(aggregation, clamp_mode, alpha, ref_beta, seed):
    cfg = ObjectiveConfig(
        aggregation=aggregation, clamp_mode=clamp_mode, alpha=alpha, ref_beta=ref_beta, max_completion_tokens=8
    )
    x = random_inputs(seed)
    saturated = x.mask & ((x.student_logprobs - x.teacher_logprobs).abs() > 1)
    assert saturated.any()  # the clamp is exercised
    got, want = trrd_loss(x, cfg).loss, loop_trrd(x, cfg)
    assert abs(got.item() - want.item()) < 1e-10
    g_got, g_want = (torch.autograd.grad(v, x.student_logprobs)[0] for v in (got, want))
    assert torch.allclose(g_got, g_want, atol=1e-10, rtol=0)


# ---- invariants -----------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("clamp_mode", MODES)
@pytest.mark.parametrize("ref_beta", [0.0, 0.05])
def test_alpha_one_is_exactly_grpo(aggregation, clamp_mode, ref_beta):
    # Paper Eq. 3 and App. C (the §4.1 prose says alpha = 0; the equations win).
    cfg = ObjectiveConfig(aggregation=aggregation, clamp_mode=clamp_mode, alpha=1.0, ref_beta=ref_beta)
    x = random_inputs(10)
    trrd, grpo = trrd_loss(x, cfg), grpo_loss(x, dataclasses.replace(cfg, name="grpo"))
    assert torch.equal(trrd.loss, grpo.loss)
    g_trrd, g_grpo = (torch.autograd.grad(o.loss, x.student_logprobs)[0] for o in (trrd, grpo))
    assert torch.equal(g_trrd, g_grpo)


@pytest.mark.parametrize("clamp_mode", MODES)
def test_masked_tokens_do_not_matter(clamp_mode):
    cfg = ObjectiveConfig(clamp_mode=clamp_mode, ref_beta=0.05)
    x, y = random_inputs(11), random_inputs(11)
    pad = ~y.mask
    with torch.no_grad():
        y.student_logprobs[pad] = float("-inf")
    y.old_logprobs[pad], y.teacher_logprobs[pad], y.ref_logprobs[pad] = 30.0, float("nan"), float("-inf")
    out_x, out_y = trrd_loss(x, cfg), trrd_loss(y, cfg)
    assert out_x.loss.item() == out_y.loss.item() and out_x.metrics == out_y.metrics
    g_x = torch.autograd.grad(out_x.loss, x.student_logprobs)[0]
    g_y = torch.autograd.grad(out_y.loss, y.student_logprobs)[0]
    assert torch.equal(g_x, g_y)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_all_equal_logprobs_give_ratio_one_and_minus_mean_advantage(aggregation):
    x = random_inputs(12)
    x.student_logprobs = x.old_logprobs.clone().requires_grad_(True)
    x.teacher_logprobs = x.old_logprobs.clone()
    cfg = ObjectiveConfig(aggregation=aggregation)
    out = trrd_loss(x, cfg)
    grpo = grpo_loss(x, dataclasses.replace(cfg, name="grpo"))
    assert out.metrics["ratio_mean"] == 1.0 and out.metrics["teacher_clamp_frac"] == 0.0
    assert out.loss.item() == pytest.approx(grpo.loss.item(), abs=1e-15)
    # by hand for seq-mean-token-mean: -mean of A over the non-empty rows
    if aggregation == "seq-mean-token-mean":
        assert out.loss.item() == pytest.approx(-x.advantages[:-1].mean().item(), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8])
def test_clamp_bounds_the_ratio_at_the_first_update(alpha):
    # lp = lp_old: log r = (1 - alpha) clamp(lp - lp_T) lies in [-(1 - alpha) c, (1 - alpha) c]
    x = random_inputs(13)
    x.student_logprobs = x.old_logprobs.clone().requires_grad_(True)
    x.teacher_logprobs = x.old_logprobs + 20 * torch.randn(x.old_logprobs.shape, dtype=torch.float64)
    x.advantages = torch.ones(5, dtype=torch.float64)  # A > 0: the loss term is -min(r, 1.28)
    cfg = ObjectiveConfig(alpha=alpha, eps_high=100.0)  # no PPO clip, so -loss is the mean ratio
    out = trrd_loss(x, cfg)
    bound = math.exp((1 - alpha) * cfg.clamp)
    assert out.metrics["teacher_clamp_frac"] > 0.5
    ratios = torch.exp((1 - alpha) * (x.old_logprobs - x.teacher_logprobs).clamp(-1, 1))[x.mask]
    assert 1 / bound - 1e-12 <= ratios.min() and ratios.max() <= bound + 1e-12
    assert 1 / bound - 1e-12 <= out.metrics["ratio_mean"] <= bound + 1e-12
    assert 1 / bound - 1e-12 <= -out.loss.item() <= bound + 1e-12


def test_straight_through_has_same_value_and_full_gradient_on_saturated_tokens():
    x = random_inputs(14)
    hard = trrd_loss(x, CFG)
    st = trrd_loss(x, dataclasses.replace(CFG, clamp_mode="straight_through"))
    assert hard.loss.item() == st.loss.item() and hard.metrics == st.metrics
    g_hard = torch.autograd.grad(hard.loss, x.student_logprobs)[0]
    g_st = torch.autograd.grad(st.loss, x.student_logprobs)[0]
    saturated = x.mask & ((x.student_logprobs - x.teacher_logprobs).abs() > CFG.clamp).detach()
    live = saturated & (g_st != 0)  # tokens the PPO clip or A = 0 did not zero
    assert live.sum() >= 2
    # d log r / d lp: alpha (hard) vs 1 (straight-through); everything else is shared.
    assert torch.allclose(g_hard[live], CFG.alpha * g_st[live], atol=1e-15, rtol=0)
    assert torch.equal(g_hard[x.mask & ~saturated], g_st[x.mask & ~saturated])


def test_gradient_sign_is_minus_advantage_where_unclipped():
    x = random_inputs(15)
    out = trrd_loss(x, CFG)
    grad = torch.autograd.grad(out.loss, x.student_logprobs)[0]
    gap = (x.student_logprobs - x.teacher_logprobs).detach().clamp(-1, 1)
    r = torch.exp(0.5 * (x.student_logprobs.detach() - x.old_logprobs) + 0.5 * gap)
    adv = x.advantages[:, None].expand_as(r)
    unclipped = x.mask & (((adv > 0) & (r < 1.28)) | ((adv < 0) & (r > 0.8)))
    assert unclipped.sum() > 5
    assert torch.equal(torch.sign(grad[unclipped]), -torch.sign(adv[unclipped]))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("clamp_mode", MODES)
def test_microbatches_with_global_denominators_sum_to_full_batch(aggregation, clamp_mode):
    cfg = ObjectiveConfig(aggregation=aggregation, clamp_mode=clamp_mode)
    x = random_inputs(16, B=8)
    full = trrd_loss(x, cfg).loss
    slices = [slice(0, 2), slice(2, 3), slice(3, 8)]
    den = Denominators(0.0, 0.0)
    for s in slices:
        den = den + Denominators.of(x.mask[s])
    parts = sum(trrd_loss(microbatch(x, s, den), cfg).loss for s in slices)
    assert abs(parts.item() - full.item()) < 1e-12
    g_full, g_parts = (torch.autograd.grad(v, x.student_logprobs)[0] for v in (full, parts))
    assert torch.allclose(g_full, g_parts, atol=1e-14, rtol=0)


def microbatch(x, rows, den):
    """Rows ``rows`` of x as one micro-batch of a step whose totals are ``den``."""
    cut = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    cut = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in cut.items()}
    return LossInputs(**{**cut, "denominators": den})
