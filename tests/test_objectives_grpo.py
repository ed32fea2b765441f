"""grpo_loss: hand-derived values, a per-token loop reference, invariants."""

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
    aggregate,
    grpo_loss,
)

E05, EM05 = math.exp(0.5), math.exp(-0.5)  # 1.6487212707, 0.6065306597
CFG = ObjectiveConfig(name="grpo")


def hand_inputs():
    # Two completions with the same log-ratios lp - lp_old = [0, 0.5, -0.5]; A = +1 and -1.
    lp = torch.tensor([[-1.0, -0.5, -1.5], [-1.0, -0.5, -1.5]], dtype=torch.float64, requires_grad=True)
    old = torch.full((2, 3), -1.0, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    return LossInputs(lp, old, adv, torch.ones(2, 3, dtype=torch.bool))


def test_hand_values():
    # Row 0, A = +1:
    #   t0 r = 1                            -> -min(1, 1)          = -1
    #   t1 r = e^0.5 = 1.6487 > 1.28        -> -min(1.6487, 1.28)  = -1.28   (clipped high)
    #   t2 r = e^-0.5 = 0.6065 < 0.8        -> -min(0.6065, 0.8)   = -0.6065 (unclipped: min wins)
    #   token mean: -(1 + 1.28 + 0.6065) / 3 = -0.962176887
    # Row 1, A = -1:
    #   t0 -> -min(-1, -1) = 1
    #   t1 -> -min(-1.6487, -1.28) = 1.6487 (unclipped: the pessimistic branch)
    #   t2 -> -min(-0.6065, -0.8)  = 0.8    (clipped low)
    #   token mean: (1 + 1.6487 + 0.8) / 3 = 1.149573757
    # seq mean: (-0.962176887 + 1.149573757) / 2 = 0.093698435
    inputs = hand_inputs()
    out = grpo_loss(inputs, CFG)
    assert out.loss.item() == pytest.approx(0.09369843516458237, abs=1e-12)
    # Each token weighs 1/(3*2) = 1/6; d(-r A)/d lp = -r A where unclipped, 0 where clipped.
    (grad,) = torch.autograd.grad(out.loss, inputs.student_logprobs)
    want = torch.tensor([[-1 / 6, 0.0, -EM05 / 6], [1 / 6, E05 / 6, 0.0]], dtype=torch.float64)
    assert torch.allclose(grad, want, atol=1e-12, rtol=0)
    m = out.metrics
    assert m["clip_frac_high"] == pytest.approx(1 / 6) and m["clip_frac_low"] == pytest.approx(1 / 6)
    # ratio mean: (1 + 1.6487 + 0.6065) / 3 = 1.085083977
    assert m["ratio_mean"] == pytest.approx(1.0850839768042537, abs=1e-12)
    # k3: t1 e^0.5 - 1 - 0.5 = 0.148721, t2 e^-0.5 - 1 + 0.5 = 0.106531; mean of (0, .1487, .1065)
    assert m["approx_kl_old"] == pytest.approx(0.08508397680425388, abs=1e-12)
    assert m["loss"] == m["pg_loss"] == pytest.approx(out.loss.item())
    assert m["num_tokens"] == 6.0 and "teacher_logratio_mean" not in m


def test_reference_kl_by_hand():
    # lp = lp_old, A = 0: the policy term is 0. ref - lp = 0.5, so k3 = e^0.5 - 0.5 - 1 = 0.148721.
    lp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    inputs = LossInputs(lp, lp.detach(), torch.zeros(1), torch.ones(1, 1), ref_logprobs=torch.tensor([[-0.5]]))
    out = grpo_loss(inputs, ObjectiveConfig(name="grpo", ref_beta=0.1))
    assert out.loss.item() == pytest.approx(0.1 * (E05 - 1.5), abs=1e-12)
    assert out.metrics["kl_ref"] == pytest.approx(E05 - 1.5, abs=1e-12)
    # d/dlp [e^(ref - lp) + lp] = 1 - e^0.5, times 0.1
    (grad,) = torch.autograd.grad(out.loss, lp)
    assert grad.item() == pytest.approx(0.1 * (1 - E05), abs=1e-12)


def test_reference_kl_without_ref_logprobs_is_a_config_error():
    with pytest.raises(ConfigError, match="ref_logprobs"):
        grpo_loss(hand_inputs(), ObjectiveConfig(name="grpo", ref_beta=0.1))


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


def loop_grpo(lp, old, adv, mask, cfg, ref=None):
    rows = []
    for i in range(lp.shape[0]):
        row = []
        for t in range(lp.shape[1]):
            if not mask[i, t]:
                continue
            token = ppo_token(lp[i, t] - old[i, t], float(adv[i]), cfg)
            if cfg.ref_beta:
                x = ref[i, t] - lp[i, t]
                token = token + cfg.ref_beta * (torch.exp(x) - x - 1)
            row.append(token)
        rows.append(row)
    return loop_aggregate(rows, lp.shape[1], cfg)


def random_inputs(seed, B=5, T=6):
    gen = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(B, T, generator=gen, dtype=torch.float64)
    lp = (old + 0.4 * torch.randn(B, T, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    adv[1] = 0.0
    mask = torch.rand(B, T, generator=gen) < 0.75
    mask[:, 0], mask[-1] = True, False  # ragged rows and one empty row
    teacher = old + 1.5 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    ref = old + 0.3 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    return LossInputs(lp, old, adv, mask, teacher_logprobs=teacher, ref_logprobs=ref)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("ref_beta", [0.0, 0.05])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(aggregation, ref_beta, seed):
    cfg = ObjectiveConfig(name="grpo", aggregation=aggregation, ref_beta=ref_beta, max_completion_tokens=8)
    x = random_inputs(seed)
    got = grpo_loss(x, cfg).loss
    want = loop_grpo(x.student_logprobs, x.old_logprobs, x.advantages, x.mask, cfg, x.ref_logprobs)
    assert abs(got.item() - want.item()) < 1e-10
    g_got, g_want = (torch.autograd.grad(v, x.student_logprobs)[0] for v in (got, want))
    assert torch.allclose(g_got, g_want, atol=1e-10, rtol=0)


# ---- invariants -----------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_masked_tokens_do_not_matter(aggregation):
    cfg = ObjectiveConfig(name="grpo", aggregation=aggregation, ref_beta=0.05)
    x = random_inputs(3)
    y = random_inputs(3)
    pad = ~y.mask
    with torch.no_grad():
        y.student_logprobs[pad] = float("-inf")
    y.old_logprobs[pad], y.ref_logprobs[pad] = float("nan"), 40.0
    out_x, out_y = grpo_loss(x, cfg), grpo_loss(y, cfg)
    assert out_x.loss.item() == out_y.loss.item()
    (g_x,), (g_y,) = (
        torch.autograd.grad(out_x.loss, x.student_logprobs),
        torch.autograd.grad(out_y.loss, y.student_logprobs),
    )
    assert torch.equal(g_x, g_y)
    assert out_x.metrics == out_y.metrics


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_on_policy_ratio_is_one_and_loss_is_minus_mean_advantage(aggregation):
    x = random_inputs(4)
    x.student_logprobs = x.old_logprobs.clone().requires_grad_(True)
    out = grpo_loss(x, ObjectiveConfig(name="grpo", aggregation=aggregation))
    adv_BT = x.advantages[:, None].expand_as(x.old_logprobs)
    assert out.metrics["ratio_mean"] == 1.0 and out.metrics["approx_kl_old"] == 0.0
    assert out.loss.item() == pytest.approx(-aggregate(adv_BT, x.mask, aggregation).item(), abs=1e-12)


def test_gradient_sign_is_minus_advantage_where_unclipped():
    x = random_inputs(5)
    out = grpo_loss(x, CFG)
    (grad,) = torch.autograd.grad(out.loss, x.student_logprobs)
    r = torch.exp(x.student_logprobs - x.old_logprobs).detach()
    adv = x.advantages[:, None].expand_as(r)
    unclipped = x.mask & (((adv > 0) & (r < 1 + CFG.eps_high)) | ((adv < 0) & (r > 1 - CFG.eps_low)))
    assert unclipped.sum() > 5
    assert torch.equal(torch.sign(grad[unclipped]), -torch.sign(adv[unclipped]))
    clipped = x.mask & ~unclipped & (adv != 0)
    assert clipped.sum() > 0 and torch.equal(grad[clipped], torch.zeros_like(grad[clipped]))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_microbatches_with_global_denominators_sum_to_full_batch(aggregation):
    cfg = ObjectiveConfig(name="grpo", aggregation=aggregation, ref_beta=0.05)
    x = random_inputs(6, B=7)
    full = grpo_loss(x, cfg).loss
    slices = [slice(0, 3), slice(3, 7)]
    den = Denominators.of(x.mask[slices[0]]) + Denominators.of(x.mask[slices[1]])
    parts = sum(grpo_loss(microbatch(x, s, den), cfg).loss for s in slices)
    assert abs(parts.item() - full.item()) < 1e-12
    g_full, g_parts = (torch.autograd.grad(v, x.student_logprobs)[0] for v in (full, parts))
    assert torch.allclose(g_full, g_parts, atol=1e-14, rtol=0)


def test_float_mask_equals_bool_mask():
    x = random_inputs(7)
    y = random_inputs(7)
    y.mask = y.mask.double()
    assert grpo_loss(x, CFG).loss.item() == grpo_loss(y, CFG).loss.item()


def test_teacher_gap_is_reported_when_present():
    x = random_inputs(8)
    gap = (x.student_logprobs - x.teacher_logprobs).detach()[x.mask].mean().item()
    assert grpo_loss(x, CFG).metrics["teacher_logratio_mean"] == pytest.approx(gap, abs=1e-12)


def test_clip_fractions_count_only_active_clips():
    # Row 1 has A = 0: its tokens may have r outside the band, but no clip is active there.
    x = random_inputs(9)
    x.student_logprobs = (x.old_logprobs + 0.5 * torch.sign(torch.randn(5, 6, dtype=torch.float64))).requires_grad_(
        True
    )
    m = grpo_loss(x, CFG).metrics
    r = torch.exp(x.student_logprobs - x.old_logprobs).detach()[x.mask]
    adv = x.advantages[:, None].expand(5, 6)[x.mask]
    low, high = ((adv < 0) & (r < 0.8)).double().mean().item(), ((adv > 0) & (r > 1.28)).double().mean().item()
    assert low > 0 and high > 0 and ((adv == 0) & ((r < 0.8) | (r > 1.28))).any()
    assert m["clip_frac_low"] == pytest.approx(low, abs=1e-15) and m["clip_frac_high"] == pytest.approx(high, abs=1e-15)


def microbatch(x, rows, den):
    """Rows ``rows`` of x as one micro-batch of a step whose totals are ``den``."""
    cut = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    cut = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in cut.items()}
    return LossInputs(**{**cut, "denominators": den})
