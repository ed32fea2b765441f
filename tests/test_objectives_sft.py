"""sft_loss and sft's row filter: hand-derived values per aggregation mode, a loop reference, invariants."""

import dataclasses

import numpy as np
import pytest
import torch

from rladctl.config import TrainConfig
from rladctl.objectives import (
    AGGREGATIONS,
    Denominators,
    LossInputs,
    ObjectiveConfig,
    get_objective_record,
    sft_loss,
)

CFG = ObjectiveConfig(name="sft")


def hand_inputs():
    # Row 0 has two tokens (lp -1, -2), row 1 one token (lp -0.5); padding holds junk.
    lp = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, 7.0, float("nan")]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return LossInputs(lp, lp.detach(), torch.tensor([5.0, -5.0]), mask)


# NLL per token: row 0 [1, 2], row 1 [0.5]; d nll / d lp = -1 times each token's weight.
HAND = {
    # (1.5 + 0.5)/2 = 1.0; weights 1/(2*2), 1/2
    ("seq-mean-token-mean", 0): (1.0, [[-0.25, -0.25, 0.0], [-0.5, 0.0, 0.0]]),
    # 3.5 / 3; weights 1/3
    ("token-mean", 0): (3.5 / 3, [[-1 / 3, -1 / 3, 0.0], [-1 / 3, 0.0, 0.0]]),
    # Dr. GRPO L = T = 3: (3/3 + 0.5/3)/2 = 7/12; weights 1/6
    ("seq-mean-token-sum-norm", 0): (7 / 12, [[-1 / 6, -1 / 6, 0.0], [-1 / 6, 0.0, 0.0]]),
    # L = 4: (3/4 + 0.5/4)/2 = 0.4375; weights 1/8
    ("seq-mean-token-sum-norm", 4): (0.4375, [[-0.125, -0.125, 0.0], [-0.125, 0.0, 0.0]]),
}


@pytest.mark.parametrize("aggregation,max_tokens", list(HAND))
def test_hand_values(aggregation, max_tokens):
    inputs = hand_inputs()
    out = sft_loss(inputs, dataclasses.replace(CFG, aggregation=aggregation, max_completion_tokens=max_tokens))
    loss, grad = HAND[aggregation, max_tokens]
    assert out.loss.item() == pytest.approx(loss, abs=1e-12)
    got = torch.autograd.grad(out.loss, inputs.student_logprobs)[0]
    assert torch.allclose(got, torch.tensor(grad, dtype=torch.float64), atol=1e-12, rtol=0)
    assert out.metrics["nll"] == pytest.approx(3.5 / 3) and out.metrics["num_tokens"] == 3.0


def loop_sft(lp, mask, cfg):
    rows = [[-lp[i, t] for t in range(lp.shape[1]) if mask[i, t]] for i in range(lp.shape[0])]
    rows = [row for row in rows if row]
    if cfg.aggregation == "token-mean":
        return sum(sum(row) for row in rows) / sum(len(row) for row in rows)
    if cfg.aggregation == "seq-mean-token-mean":
        return sum(sum(row) / len(row) for row in rows) / len(rows)
    return sum(sum(row) / (cfg.max_completion_tokens or lp.shape[1]) for row in rows) / len(rows)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_matches_loop_reference(aggregation):
    gen = torch.Generator().manual_seed(0)
    lp = (-3 * torch.rand(5, 6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    mask = torch.rand(5, 6, generator=gen) < 0.7
    mask[2] = False
    cfg = dataclasses.replace(CFG, aggregation=aggregation)
    got = sft_loss(LossInputs(lp, lp.detach(), torch.zeros(5), mask), cfg).loss
    want = loop_sft(lp, mask, cfg)
    assert abs(got.item() - want.item()) < 1e-10
    g_got, g_want = (torch.autograd.grad(v, lp)[0] for v in (got, want))
    assert torch.allclose(g_got, g_want, atol=1e-10, rtol=0)


def test_advantages_and_old_logprobs_are_ignored():
    x, y = hand_inputs(), hand_inputs()
    y.advantages, y.old_logprobs = torch.tensor([0.0, 1.0]), torch.zeros(2, 3)
    assert sft_loss(x, CFG).loss.item() == sft_loss(y, CFG).loss.item()


def test_microbatches_with_global_denominators_sum_to_full_batch():
    x = hand_inputs()
    den = Denominators.of(x.mask)
    for aggregation in AGGREGATIONS:
        cfg = dataclasses.replace(CFG, aggregation=aggregation)
        parts = sum(sft_loss(microbatch(x, s, den), cfg).loss for s in (slice(0, 1), slice(1, 2)))
        assert parts.item() == pytest.approx(sft_loss(x, cfg).loss.item(), abs=1e-12)


def microbatch(x, rows, den):
    """Rows ``rows`` of x as one micro-batch of a step whose totals are ``den``."""
    cut = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    cut = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in cut.items()}
    return LossInputs(**{**cut, "denominators": den})


def test_the_row_filter_keeps_exactly_the_rows_that_reach_train_sft_min_reward():
    rows = get_objective_record("sft").row_filter
    rewards_B = np.array([0.0, 0.5, 1.0, 0.999, 1.0, 2.0])
    prompt_ids_B = ["a", "a", "a", "b", "b", "b"]  # groups do not matter: a group may keep one row
    got = rows.keep(rewards_B, prompt_ids_B, TrainConfig())  # default sft_min_reward = 1.0
    assert got.dtype == bool and got.tolist() == [False, False, True, False, True, True]
    # The threshold itself is kept (>=), and a group whose rewards all agree is not dropped.
    got = rows.keep(rewards_B, prompt_ids_B, TrainConfig(sft_min_reward=0.5))
    assert got.tolist() == [False, True, True, True, True, True]
    assert rows.keep(np.zeros(3), ["c"] * 3, TrainConfig(sft_min_reward=0.0)).tolist() == [True] * 3
    # train says "nothing to train on: <this>" when no row is kept
    assert rows.nothing_left(TrainConfig(sft_min_reward=1.5)) == "no row reaches train.sft_min_reward=1.5"


def test_train_keeps_the_rows_the_filter_keeps_and_says_so_when_none_is_left(shards):
    from rladctl.errors import ConfigError
    from rladctl.stages.train import load_rows

    inputs = (str(shards["rollouts"]),)
    every = load_rows(TrainConfig(inputs=inputs), get_objective_record("grpo"))[0].rewards  # [16], no filter
    assert sorted(set(every.tolist())) == [0.0, 1.0]  # the fixture's parity rewards
    for threshold in (0.0, 1.0):
        rows, _ = load_rows(TrainConfig(inputs=inputs, sft_min_reward=threshold), get_objective_record("sft"))
        assert rows.rewards.tolist() == every[every >= threshold].tolist() and rows.dropped_groups == 0
    with pytest.raises(ConfigError) as info:
        load_rows(TrainConfig(inputs=inputs, sft_min_reward=1.5), get_objective_record("sft"))
    assert str(info.value) == (
        f"nothing to train on: no row reaches train.sft_min_reward=1.5, in {inputs[0]}. "
        "sample more prompts or relax the filter."
    )
