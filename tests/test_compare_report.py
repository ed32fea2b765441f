"""The compare results page keeps every method it was given, in a fixed order."""

from types import SimpleNamespace

from rladctl.reports.compare_report import paired_gaps, results_table


def run(method: str, seed: int, mean: float) -> SimpleNamespace:
    overall = SimpleNamespace(mean=mean, pass_at={8: mean + 0.2})
    return SimpleNamespace(method=method, seed=seed, overall=overall, by_difficulty={}, seconds=10.0, iterations=[])


def test_every_method_has_a_row_in_the_pages_order_and_unknown_ones_follow():
    # "mine" is another package's objective: not in ORDER, so after the known ones, not dropped.
    runs = [
        run(m, s, 0.1 * i + s / 100)
        for i, m in enumerate(["mine", "rlad", "opd", "grpo", "opd_grpo", "base"])
        for s in (0, 1)
    ]
    header, rows = results_table(runs, 8)
    assert [r[0] for r in rows] == ["base", "grpo", "opd", "opd_grpo", "rlad", "mine"]
    # opd: runs 2 (i = 2): Mean@8 0.2 and 0.21 over the two seeds -> 0.205 ± 0.007
    assert rows[2][1] == "0.205 ± 0.007" and header[:3] == ["method", "Mean@8", "Pass@8"]
    # Paired with grpo (i = 3, 0.3 + s/100): opd is 0.1 behind on both seeds.
    gaps = {r[0]: r[1:] for r in paired_gaps(runs, 8)}
    assert gaps["opd - grpo"] == ["-0.100 ± 0.000", "0/2"]
