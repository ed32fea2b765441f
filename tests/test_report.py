"""Markdown tables, report files, determinism and plots that open."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rladctl.errors import ConfigError
from rladctl.reports.eval_report import (
    comparison_rows,
    comparison_table,
    curve_plot,
    difficulty_rows,
    difficulty_table,
    write_report,
)
from rladctl.reports.metrics import PromptResult, summarize


def _model(p_correct: float, seed: int, levels=("2", "10", "4"), P_per_level=6, n=8):
    rng = np.random.default_rng(seed)
    results = []
    for level in levels:
        for i in range(P_per_level):
            scores = (rng.uniform(size=n) < p_correct).astype(float).tolist()
            results.append(PromptResult(f"{level}-{i}", level, scores))
    return summarize(results, K=n, bootstrap=100, seed=0)


@pytest.fixture(scope="module")
def summaries():
    return {"base": _model(0.3, 1), "grpo": _model(0.6, 2), "rlad": _model(0.8, 3, levels=("2", "4"))}


def test_comparison_rows_header_and_cells(summaries):
    header, rows = comparison_rows(summaries, 8)
    assert header == ["model", "Mean@8", "Pass@1", "Pass@2", "Pass@4", "Pass@8", "n", "prompts"]
    assert [r[0] for r in rows] == ["base", "grpo", "rlad"]  # caller's order kept
    g = summaries["grpo"].overall
    half = (g.mean_ci[1] - g.mean_ci[0]) / 2
    assert rows[1][1] == f"{g.mean:.3f} ± {half:.3f}"
    assert rows[1][-2:] == ["8", "18"]


def test_comparison_table_is_markdown(summaries):
    lines = comparison_table(summaries, 8).splitlines()
    assert lines[0].startswith("| model") and "Pass@8" in lines[0]
    assert set(lines[1]) <= set("|-: ")
    assert len(lines) == 2 + len(summaries)
    assert len({len(line) for line in lines}) == 1  # padded: columns line up in plain text


def test_difficulty_columns_sorted_naturally_with_missing_levels(summaries):
    header, rows = difficulty_rows(summaries, 8, "mean")
    assert header == ["model", "2", "4", "10", "all"]
    rlad = rows[2]
    assert rlad[3] == "–"  # rlad was not evaluated on level 10
    assert rlad[1] == f"{summaries['rlad'].by_difficulty['2'].mean:.3f}"
    assert rlad[4] == f"{summaries['rlad'].overall.mean:.3f}"
    _, pass_rows = difficulty_rows(summaries, 8, "pass@8")
    assert pass_rows[0][1] == f"{summaries['base'].by_difficulty['2'].pass_at[8]:.3f}"


def test_unknown_metric_refused_with_choices(summaries):
    with pytest.raises(ConfigError, match="pass@8") as err:
        difficulty_table(summaries, 8, "pass@3")
    assert "\n" not in str(err.value)


def test_write_report_files(tmp_path, summaries):
    paths = write_report(tmp_path / "report", summaries, 8, "K&K demo", extra_md="Run by the test.")
    assert set(paths) == {"json", "md", "pass_at_k", "difficulty"}
    assert all(p.exists() for p in paths.values())
    assert not list((tmp_path / "report").glob("*.tmp"))

    md = paths["md"].read_text()
    assert md.startswith("# K&K demo\n")
    assert "## Mean@8 by difficulty" in md and "## Pass@8 by difficulty" in md
    header = difficulty_table(summaries, 8, "mean").splitlines()[0]
    assert [c.strip() for c in header.split("|")[1:-1]] == ["model", "2", "4", "10", "all"]
    assert header in md
    assert difficulty_table(summaries, 8, "mean") in md
    assert comparison_table(summaries, 8) in md
    assert "(pass_at_k.png)" in md and "(difficulty.png)" in md
    assert md.rstrip().endswith("Run by the test.")

    doc = json.loads(paths["json"].read_text())
    assert doc["K"] == 8 and doc["threshold"] == 1.0 and doc["title"] == "K&K demo"
    assert doc["summaries"]["grpo"] == summaries["grpo"].to_dict()


def test_pngs_open_and_are_not_blank(tmp_path, summaries):
    import matplotlib.image

    paths = write_report(tmp_path, summaries, 8, "demo")
    for key in ("pass_at_k", "difficulty"):
        image = matplotlib.image.imread(paths[key])  # [H, W, channels]
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # something was drawn on the white canvas


def test_same_summaries_give_identical_files(tmp_path, summaries):
    a = write_report(tmp_path / "a", summaries, 8, "demo")
    b = write_report(tmp_path / "b", summaries, 8, "demo")
    for key in ("json", "md", "pass_at_k", "difficulty"):
        assert a[key].read_bytes() == b[key].read_bytes(), key


def test_rewrite_in_place_replaces_files(tmp_path, summaries):
    write_report(tmp_path, {"base": summaries["base"]}, 8, "first")
    write_report(tmp_path, summaries, 8, "second")
    assert (tmp_path / "report.md").read_text().startswith("# second")


def test_no_difficulty_levels_skips_difficulty_outputs(tmp_path):
    results = [PromptResult(str(i), None, [1.0, 0.0]) for i in range(4)]
    s = {"m": summarize(results, K=2, bootstrap=10)}
    paths = write_report(tmp_path, s, 2, "flat")
    assert set(paths) == {"json", "md", "pass_at_k"}
    assert "by difficulty" not in paths["md"].read_text()


def test_empty_report_refused(tmp_path):
    with pytest.raises(ConfigError, match="nothing to report"):
        write_report(tmp_path, {}, 8, "x")


def test_curve_plot(tmp_path):
    import matplotlib.image

    path = curve_plot(
        tmp_path / "curves" / "reward.png",
        {"grpo": [(0, 0.2), (1, 0.4), (2, 0.5)], "rlad": [(0, 0.2), (1, 0.5), (2, 0.7)]},
        "iteration",
        "mean reward",
        "reward per iteration",
    )
    assert path.exists() and matplotlib.image.imread(path).shape[0] > 200
