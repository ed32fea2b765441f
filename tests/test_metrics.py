"""Pass@k against brute force, Mean@K against the plain mean, bootstrap determinism, grouping."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rladctl.errors import ConfigError
from rladctl.reports.metrics import (
    PromptResult,
    Summary,
    ks_for,
    natural_key,
    pass_at_k,
    pass_at_k_table,
    summarize,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c of them correct) that hold a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(1 for s in subsets if any(s)) / len(subsets)


def test_pass_at_k_equals_brute_force_for_every_small_case():
    checked = 0
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
                checked += 1
    assert checked == sum(n * (n + 1) for n in range(1, 11))  # every (n, c, k) was visited


def test_pass_at_k_hand_case():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)
    # k=1 is the plain fraction correct: c/n
    assert pass_at_k(32, 8, 1) == pytest.approx(0.25, abs=1e-15)


def test_pass_at_k_is_one_when_every_subset_holds_a_correct_sample():
    # n - c < k: fewer than k wrong samples, so any k samples include a correct one
    assert pass_at_k(10, 8, 3) == 1.0
    assert pass_at_k(32, 1, 32) == 1.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(10, 0, 10) == 0.0


def test_pass_at_k_stays_finite_for_large_n():
    # C(1000, 500) overflows a float; the product form does not
    assert pass_at_k(1000, 10, 500) == pytest.approx(1 - math.comb(990, 500) / math.comb(1000, 500), abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k", "needle"),
    [(4, 1, 5, "k <= n"), (4, 1, 0, "k >= 1"), (4, 5, 2, "0 <= c <= n"), (4, -1, 2, "0 <= c <= n")],
)
def test_pass_at_k_refuses_bad_arguments(n, c, k, needle):
    with pytest.raises(ConfigError) as err:
        pass_at_k(n, c, k)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_k_above_n_says_how_to_fix():
    with pytest.raises(ConfigError, match=r"eval\.n.*--pass-at"):
        pass_at_k(8, 2, 32)


def test_pass_at_k_table_matches_the_scalar_loop():
    for n in (1, 7, 32, 100):
        for k in ks_for(n):
            table = pass_at_k_table(n, k)
            assert table.shape == (n + 1,)
            expected = [pass_at_k(n, c, k) for c in range(n + 1)]
            np.testing.assert_allclose(table, expected, rtol=0, atol=1e-12)


def test_ks_for():
    assert ks_for(32) == [1, 2, 4, 8, 16, 32]
    assert ks_for(10) == [1, 2, 4, 8, 10]
    assert ks_for(1) == [1]
    assert ks_for(2) == [1, 2]
    with pytest.raises(ConfigError):
        ks_for(0)


def test_natural_order_of_levels():
    assert sorted(["10", "2", "ppl10", "ppl2", "1"], key=natural_key) == ["1", "2", "10", "ppl2", "ppl10"]


# --- summarize ----------------------------------------------------------------------------------


def _results():
    # 4 prompts, n = 4 samples each, two difficulty levels ("2" and "10")
    return [
        PromptResult("a", "2", [1.0, 1.0, 0.0, 0.0]),  # c=2
        PromptResult("b", "2", [1.0, 0.5, 0.5, 0.0]),  # c=1, partial credit counts in mean only
        PromptResult("c", "10", [0.0, 0.0, 0.0, 0.0]),  # c=0
        PromptResult("d", "10", [1.0, 1.0, 1.0, 1.0]),  # c=4
    ]


def test_mean_is_the_plain_mean_of_raw_scores():
    results = _results()
    s = summarize(results, K=4, bootstrap=0)
    all_scores = [x for r in results for x in r.scores]
    assert s.overall.mean == pytest.approx(sum(all_scores) / len(all_scores), abs=1e-15)
    assert s.overall.mean == pytest.approx((2.0 + 2.0 + 0.0 + 4.0) / 16, abs=1e-15)  # per-prompt sums
    # accuracy counts only score >= 1.0: (2 + 1 + 0 + 4) / 16
    assert s.overall.accuracy == pytest.approx(7 / 16, abs=1e-15)


def test_pass_at_k_is_the_mean_of_per_prompt_estimators():
    s = summarize(_results(), K=4, bootstrap=0)
    assert list(s.overall.pass_at) == [1, 2, 4]
    for k in (1, 2, 4):
        expected = np.mean([pass_at_k(4, c, k) for c in (2, 1, 0, 4)])
        assert s.overall.pass_at[k] == pytest.approx(expected, abs=1e-12)
    # pass@1 = (2/4 + 1/4 + 0 + 1) / 4; pass@2 = (1 - 1/6 + 1 - 3/6 + 0 + 1) / 4
    assert s.overall.pass_at[1] == pytest.approx(7 / 16, abs=1e-12)
    assert s.overall.pass_at[2] == pytest.approx((5 / 6 + 1 / 2 + 0 + 1) / 4, abs=1e-12)


def test_partial_credit_never_counts_as_correct():
    # every sample scores 0.5: mean is 0.5, but nothing is correct, so pass@k is 0 for every k
    results = [PromptResult(str(i), None, [0.5] * 8) for i in range(3)]
    s = summarize(results, K=8, bootstrap=0)
    assert s.overall.mean == pytest.approx(0.5)
    assert s.overall.accuracy == 0.0
    assert all(v == 0.0 for v in s.overall.pass_at.values())
    # a lower threshold is the explicit opt-in to partial credit
    lenient = summarize(results, K=8, threshold=0.5, bootstrap=0)
    assert all(v == 1.0 for v in lenient.overall.pass_at.values())


def test_grouping_by_difficulty_in_natural_order():
    s = summarize(_results(), K=4, bootstrap=0)
    assert list(s.by_difficulty) == ["2", "10"]
    easy, hard = s.by_difficulty["2"], s.by_difficulty["10"]
    assert easy.prompts == hard.prompts == 2 and s.overall.prompts == 4
    assert easy.mean == pytest.approx((2.0 + 2.0) / 8)
    assert hard.mean == pytest.approx(4.0 / 8)
    assert easy.pass_at[1] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert hard.pass_at[4] == pytest.approx((0.0 + 1.0) / 2)


def test_prompts_without_difficulty_count_overall_only():
    results = _results() + [PromptResult("e", None, [1.0, 1.0, 1.0, 1.0])]
    s = summarize(results, K=4, bootstrap=0)
    assert s.overall.prompts == 5
    assert sum(g.prompts for g in s.by_difficulty.values()) == 4


def _random_results(P=60, n=8, seed=1):
    rng = np.random.default_rng(seed)
    p_correct = rng.uniform(0, 1, size=P)
    return [
        PromptResult(f"p{i}", f"{i % 3 + 2}", (rng.uniform(size=n) < p_correct[i]).astype(float).tolist())
        for i in range(P)
    ]


def test_bootstrap_interval_contains_the_estimate_and_is_deterministic():
    results = _random_results()
    a = summarize(results, K=8, bootstrap=500, seed=3)
    b = summarize(results, K=8, bootstrap=500, seed=3)
    assert a == b
    for g in [a.overall, *a.by_difficulty.values()]:
        assert g.mean_ci[0] <= g.mean <= g.mean_ci[1]
        assert g.pass_at_ci[8][0] <= g.pass_at[8] <= g.pass_at_ci[8][1]
        assert g.mean_ci[0] < g.mean_ci[1]  # not degenerate on varied data
    c = summarize(results, K=8, bootstrap=500, seed=4)
    assert c.overall.mean_ci != a.overall.mean_ci  # the seed is used
    assert c.overall.mean == a.overall.mean  # point estimates do not depend on it


def test_bootstrap_zero_gives_no_intervals():
    s = summarize(_results(), K=4, bootstrap=0)
    assert s.overall.mean_ci is None and s.overall.pass_at_ci == {}


def test_unequal_sample_counts_refused():
    results = _results() + [PromptResult("short", "2", [1.0, 0.0])]
    with pytest.raises(ConfigError, match="'short' has 2"):
        summarize(results, K=2)


def test_n_below_K_refused():
    with pytest.raises(ConfigError, match=r"pass@32 needs k <= n.*n=4.*eval\.n"):
        summarize(_results(), K=32)


def test_empty_results_refused():
    with pytest.raises(ConfigError, match="no prompts"):
        summarize([], K=1)


def test_to_dict_round_trips_through_json():
    import json

    s = summarize(_random_results(P=12), K=8, bootstrap=50)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["overall"]["pass_at"]["8"] == s.overall.pass_at[8]
    assert Summary.from_dict(d) == s
