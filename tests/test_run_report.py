"""The run report: a compact table of a long run, its plots written and linked, the eval intervals."""

import csv
import math
import re

import pytest

from rladctl.reports.metrics import GroupSummary
from rladctl.reports.run_plots import moving_average
from rladctl.reports.run_report import TRAIN_COLUMNS, render_run_report, table_picks


def history(n: int, teacher: bool = True) -> list[dict]:
    """A synthetic run of n iterations: reward climbing from 0.2, a sine wobble on every metric."""
    rows = []
    for i in range(n):
        row = {
            "iteration": i,
            "reward_mean": 0.5,  # train's kept-row mean: the report shows the rollouts' own
            "rollout_reward": 0.2 + 0.5 * i / n + 0.05 * math.sin(i),
            "response_tokens": 30 + 5 * math.sin(i / 7),
            "rows": 16,
            **{k: 0.1 + 0.01 * math.sin(i + j) for j, k in enumerate(TRAIN_COLUMNS)},
            "seconds": 1.5,
        }
        if not teacher:
            row["teacher_logratio_mean"] = row["teacher_clamp_frac"] = None
        rows.append(row)
    return rows


def points(K: int = 8) -> dict[int, GroupSummary]:
    def at(k: int) -> GroupSummary:
        m, p = 0.3 + k / 1000, 0.6 + k / 1000
        return GroupSummary(
            prompts=20,
            n=K,
            mean=m,
            accuracy=m,
            pass_at={1: m, K: p},
            mean_ci=(m - 0.05, m + 0.05),
            pass_at_ci={1: (m - 0.05, m + 0.05), K: (p - 0.1, p + 0.1)},
        )

    return {k: at(k) for k in (0, 100, 200, 300)}


def table_rows(text: str, section: str) -> list[list[str]]:
    """Body rows of the first markdown table after ``## section``."""
    body = text.split(f"## {section}", 1)[1]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    end = next((i for i, line in enumerate(lines[2:], 2) if not line.startswith("|")), len(lines))
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:end]]


def test_table_picks_every_nth_and_the_last():
    assert table_picks(300) == [*range(0, 300, 15), 299]  # 20 strided rows + the last
    assert table_picks(21) == list(range(21))  # short runs: every row
    assert table_picks(41) == [*range(0, 41, 3), 40]
    assert table_picks(40) == [*range(0, 40, 2), 39]  # 39 is not a multiple of 2: added
    assert table_picks(0) == []


def test_moving_average_is_trailing_and_skips_gaps():
    assert moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert moving_average([1.0, None, 3.0], 3) == [1.0, 1.0, 2.0]


def test_a_300_iteration_run_gives_a_21_row_table_with_plots_linked(tmp_path):
    rows = history(300)
    report = render_run_report(tmp_path, "demo (trrd)", "300 iterations.", rows, points(), 8)
    text = report.read_text()
    table = table_rows(text, "Training")
    assert [int(r[0]) for r in table] == [*range(0, 300, 15), 299]
    # The reward columns: iteration 15's own value, then the mean of iterations 1..15 (window 15).
    want = [r["rollout_reward"] for r in rows]
    assert table[1][1] == f"{want[15]:.4g}" and table[1][2] == f"{sum(want[1:16]) / 15:.4g}"
    assert table[-1][3] == f"{rows[299]['response_tokens']:.4g}"
    for name in ("eval", "reward", "clipping", "length", "teacher"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert f"]({name}.png)" in text, name
    # Every iteration is kept in the CSV beside the report.
    with open(tmp_path / "iterations.csv") as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == list(range(300))


def test_eval_rows_carry_their_intervals(tmp_path):
    text = render_run_report(tmp_path, "x", "", history(3), points(), 8).read_text()
    evals = table_rows(text, "Evaluation")
    # At 100 updates: Mean@8 0.4 in [0.35, 0.45]; Pass@8 0.7 in [0.6, 0.8]
    assert evals[1] == ["100", "0.400 [0.350, 0.450]", "0.400 [0.350, 0.450]", "0.700 [0.600, 0.800]"]
    assert len(table_rows(text, "Training")) == 3  # a short run shows every iteration


def test_without_a_teacher_or_evaluations_those_plots_are_not_written(tmp_path):
    text = render_run_report(tmp_path, "grpo", "", history(30, teacher=False), {}, 8).read_text()
    assert not (tmp_path / "teacher.png").exists() and not (tmp_path / "eval.png").exists()
    assert "teacher.png" not in text and "eval.png" not in text
    links = re.findall(r"\]\((\w+\.png)\)", text)
    assert links == ["reward.png", "clipping.png", "length.png"]
    assert all((tmp_path / name).exists() for name in links)


@pytest.mark.parametrize("n", [1, 20])
def test_same_history_gives_identical_files(tmp_path, n):
    a = render_run_report(tmp_path / "a", "x", "", history(n), points(), 8)
    b = render_run_report(tmp_path / "b", "x", "", history(n), points(), 8)
    for name in ("report.md", "reward.png", "eval.png", "iterations.csv"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name


def test_an_opd_run_writes_a_report_from_its_artifacts(models, tmp_path):
    from conftest import run_cli, sets
    from test_run import loop_args

    done = run_cli(*loop_args(models, tmp_path / "run"), *sets("objective.name=opd"), "--json")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "run" / "report.md").read_text()
    assert text.startswith("# rladctl run: run (opd)")
    table = table_rows(text, "Training")
    assert [r[0] for r in table] == ["0", "1"] and all(float(r[3]) > 0 for r in table)  # response tokens
    with open(tmp_path / "run" / "iterations.csv") as f:
        first = next(csv.DictReader(f))
    # The reward column is the rollouts' own mean (opd trains on every row, so train's agrees).
    assert float(table[0][1]) == pytest.approx(float(first["rollout_reward"]), abs=1e-3)
    assert float(first["rollout_reward"]) == pytest.approx(float(first["reward_mean"]), abs=1e-6)
    for name in ("eval", "reward", "clipping", "length", "teacher"):
        assert f"]({name}.png)" in text and (tmp_path / "run" / f"{name}.png").exists(), name
