"""group_advantages / zero_std_groups: hand values, population std, a loop reference."""

import statistics

import numpy as np
import pytest
import torch

from rladctl.objectives.advantages import group_advantages, zero_std_groups


def test_hand_case_binary_rewards():
    # group a: [1, 0, 0, 1], mean 0.5, population std 0.5 -> +-0.5 / 0.5 = +-1
    # group b: [1, 1, 1, 1], std 0 -> exactly 0
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    ids = ["a"] * 4 + ["b"] * 4
    got = group_advantages(rewards, ids, eps=0.0)
    assert torch.equal(got, torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    # default eps = 1e-6: 0.5 / (0.5 + 1e-6) = 0.999998000004
    got = group_advantages(rewards, ids, dtype=torch.float64)
    assert got[0].item() == pytest.approx(0.5 / 0.500001, abs=1e-15) and got[4:].abs().sum() == 0


def test_population_not_sample_std():
    # [0, 1, 2]: mean 1, population std sqrt(2/3) = 0.816497 -> [-1.224745, 0, 1.224745]
    # (the sample std, 1, would give [-1, 0, 1])
    got = group_advantages(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([7, 7, 7]), eps=0.0, dtype=torch.float64)
    want = torch.tensor([-1.224744871391589, 0.0, 1.224744871391589], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_interleaved_groups_and_id_types_agree():
    # rows of group 0: rewards 1, 3 -> mean 2, std 1 -> -1, +1; group 1: 10, 10, 4 -> mean 8,
    # std sqrt((4 + 4 + 16)/3) = sqrt(8) -> [2, 2, -4] / 2.828427 = [0.707107, 0.707107, -1.414214]
    rewards = [1.0, 10.0, 3.0, 10.0, 4.0]
    want = torch.tensor([-1.0, 2 / 8**0.5, 1.0, 2 / 8**0.5, -4 / 8**0.5], dtype=torch.float64)
    for ids in (
        ["p0", "p1", "p0", "p1", "p1"],
        [0, 1, 0, 1, 1],
        torch.tensor([5, 2, 5, 2, 2]),
        np.array([3, 9, 3, 9, 9]),
    ):
        got = group_advantages(rewards, ids, eps=0.0, dtype=torch.float64)
        assert torch.allclose(got, want, atol=1e-12, rtol=0), ids


def test_equal_rewards_give_exactly_zero_even_where_float_mean_is_inexact():
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004, so a float mean and std are not exactly 0.1 and 0.
    got = group_advantages([0.1, 0.1, 0.1, 0.7], ["a", "a", "a", "b"], eps=0.0)
    assert torch.equal(got, torch.zeros(4))
    assert zero_std_groups([0.1, 0.1, 0.1, 0.7, 0.0, 1.0], ["a", "a", "a", "b", "c", "c"]).tolist() == [
        True,
        True,
        True,
        True,
        False,
        False,  # a single-row group has no variance either
    ]


def test_refuses_mismatched_lengths_and_nan():
    with pytest.raises(ValueError, match="length"):
        group_advantages([1.0, 0.0], ["a"])
    with pytest.raises(ValueError, match="NaN"):
        group_advantages([1.0, float("nan")], ["a", "a"])


def loop_advantages(rewards, ids, eps):
    out = []
    for r, g in zip(rewards, ids):
        group = [x for x, h in zip(rewards, ids) if h == g]
        mean, std = statistics.fmean(group), statistics.pstdev(group)
        out.append(0.0 if max(group) == min(group) else (r - mean) / (std + eps))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 6, size=40).tolist()
    rewards = rng.choice([0.0, 0.25, 1.0], size=40).tolist()
    rewards[:3], ids[:3] = [0.5, 0.5, 0.5], [99, 99, 99]  # a certain zero-variance group
    got = group_advantages(rewards, ids, eps=1e-6, dtype=torch.float64)
    assert torch.allclose(
        got, torch.tensor(loop_advantages(rewards, ids, 1e-6), dtype=torch.float64), atol=1e-10, rtol=0
    )
    zero = [
        max(x for x, h in zip(rewards, ids) if h == g) == min(x for x, h in zip(rewards, ids) if h == g) for g in ids
    ]
    assert zero_std_groups(rewards, ids).tolist() == zero
