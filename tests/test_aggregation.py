"""aggregate(): hand values per mode, a loop reference, micro-batch additivity, padding safety."""

import math

import pytest
import torch

from rladctl.errors import ConfigError
from rladctl.objectives import AGGREGATIONS, Denominators, aggregate

MODES = list(AGGREGATIONS)

# Two sequences of lengths 2 and 1 (T = 3), plus a row with no completion token at all.
VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_seq_mean_token_mean_by_hand():
    # seq 0: (1 + 2) / 2 = 1.5; seq 1: 4 / 1 = 4; the empty row is not a sequence.
    # (1.5 + 4) / 2 = 2.75
    assert aggregate(VALUES, MASK, "seq-mean-token-mean").item() == pytest.approx(2.75, abs=1e-12)


def test_token_mean_by_hand():
    # kept tokens 1, 2, 4: 7 / 3
    assert aggregate(VALUES, MASK, "token-mean").item() == pytest.approx(7 / 3, abs=1e-12)


def test_seq_mean_token_sum_norm_by_hand():
    # Dr. GRPO, L = T = 3: (3/3 + 4/3) / 2 = 7/6
    assert aggregate(VALUES, MASK, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 6, abs=1e-12)
    # L = 4: (3/4 + 4/4) / 2 = 0.875
    got = aggregate(VALUES, MASK, "seq-mean-token-sum-norm", max_tokens=4).item()
    assert got == pytest.approx(0.875, abs=1e-12)


def test_explicit_denominators_by_hand():
    den = Denominators(num_tokens=6.0, num_seqs=4.0)
    # token-mean: 7 / 6; seq-mean-token-mean: (1.5 + 4) / 4 = 1.375; Dr. GRPO: (1 + 4/3) / 4 = 7/12
    assert aggregate(VALUES, MASK, "token-mean", den).item() == pytest.approx(7 / 6, abs=1e-12)
    assert aggregate(VALUES, MASK, "seq-mean-token-mean", den).item() == pytest.approx(1.375, abs=1e-12)
    assert aggregate(VALUES, MASK, "seq-mean-token-sum-norm", den).item() == pytest.approx(7 / 12, abs=1e-12)


def test_denominators_of_counts_tokens_and_nonempty_seqs():
    assert Denominators.of(MASK) == Denominators(num_tokens=3.0, num_seqs=2.0)
    assert Denominators.of(MASK[:1]) + Denominators.of(MASK[1:]) == Denominators.of(MASK)


@pytest.mark.parametrize("mode", MODES)
def test_all_empty_batch_is_zero_not_nan(mode):
    values = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    out = aggregate(values, torch.zeros(2, 3), mode)
    assert out.item() == 0.0
    (grad,) = torch.autograd.grad(out, values)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("mode", MODES)
def test_padding_values_never_reach_result_or_grad(mode):
    values = VALUES.clone()
    values[MASK == 0] = float("nan")
    values[2, 0] = float("-inf")
    values.requires_grad_(True)
    out = aggregate(values, MASK.bool(), mode)
    (grad,) = torch.autograd.grad(out, values)
    assert out.item() == pytest.approx(aggregate(VALUES, MASK, mode).item(), abs=1e-12)
    assert torch.isfinite(grad).all() and not grad[MASK == 0].any()


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        aggregate(VALUES, MASK, "token_mean")
    message = str(info.value)
    assert "unknown aggregation 'token_mean'" in message and "did you mean 'token-mean'" in message
    assert all(mode in message for mode in MODES)


def loop_aggregate(values, mask, mode, num_tokens=None, num_seqs=None, max_tokens=0):
    """Slow reference: plain Python over rows and tokens."""
    B, T = len(values), len(values[0])
    rows = [[float(values[i][t]) for t in range(T) if mask[i][t]] for i in range(B)]
    rows = [row for row in rows if row]
    num_tokens = num_tokens if num_tokens is not None else sum(len(row) for row in rows)
    num_seqs = num_seqs if num_seqs is not None else len(rows)
    if mode == "token-mean":
        return sum(sum(row) for row in rows) / max(num_tokens, 1)
    if mode == "seq-mean-token-mean":
        return sum(sum(row) / len(row) for row in rows) / max(num_seqs, 1)
    return sum(sum(row) / (max_tokens or T) for row in rows) / max(num_seqs, 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("max_tokens", [0, 7])
def test_matches_loop_reference(mode, max_tokens):
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 5, generator=gen) < 0.6
    mask[3] = False
    got = aggregate(values, mask, mode, max_tokens=max_tokens).item()
    want = loop_aggregate(values.tolist(), mask.tolist(), mode, max_tokens=max_tokens)
    assert math.isclose(got, want, rel_tol=0, abs_tol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_microbatch_contributions_sum_to_the_step(mode):
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(7, 4, generator=gen) < 0.7
    mask[2] = False  # an empty row inside one micro-batch
    full = aggregate(values, mask, mode)
    slices = [slice(0, 2), slice(2, 5), slice(5, 7)]
    den = sum((Denominators.of(mask[s]) for s in slices[1:]), Denominators.of(mask[slices[0]]))
    parts = sum(aggregate(values[s], mask[s], mode, den) for s in slices)
    assert math.isclose(parts.item(), full.item(), abs_tol=1e-12)
    g_full, g_parts = (torch.autograd.grad(x, values)[0] for x in (full, parts))
    assert torch.allclose(g_full, g_parts, atol=1e-14, rtol=0)
