"""rladctl run: dry-run of every recipe, the loop's layout, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TASK_SETS, run_cli, sets
from safetensors.torch import load_file

from rladctl.reports.compare_report import mean_column, ordering_verdict

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(REPO / "recipes")) for p in RECIPES])
def test_every_recipe_dry_runs(recipe, tmp_path, models):
    # Recipes that leave the models to the caller (the demo's) get the tiny local pair.
    extra = (
        sets(f"run.student={models['student']}", f"run.teacher={models['teacher']}", f"run.dir={tmp_path / 'run'}")
        if "paper" not in recipe.parts
        else []
    )
    started = time.perf_counter()
    done = run_cli("run", str(recipe), "--dry-run", *extra, cwd=REPO)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["plan"]["iterations"] >= 1 and plan["rows_per_iteration"] >= 1
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"
    if "paper" in recipe.parts:  # the paper's shared settings
        assert (
            plan["objective"]["alpha"] == 0.5
            and plan["objective"]["eps_low"] == 0.2
            and plan["objective"]["eps_high"] == 0.28
        )
        assert plan["iteration_0"]["train"]["lr"] == 1e-6 and plan["iteration_0"]["rollout"]["group_size"] == 8
        assert plan["eval"]["pass_at"] == 32 and plan["eval"]["temperature"] == 0.6 and plan["eval"]["top_p"] == 0.95
    assert time.perf_counter() - started < 60


def loop_args(models, run_dir: Path) -> list[str]:
    return [
        "run",
        str(REPO / "recipes" / "demo.toml"),
        *sets(
            *TASK_SETS,
            f"run.dir={run_dir}",
            f"run.student={models['student']}",
            f"run.teacher={models['teacher']}",
            "run.iterations=2",
            "rollout.num_prompts=4",
            "rollout.group_size=4",
            "rollout.max_new_tokens=6",
            "rollout.prompts_per_part=1",
            "eval.pass_at=2",
            "eval.num_prompts=4",
            "eval.max_new_tokens=6",
            "train.lr=1e-3",
        ),
    ]


def final_state(run_dir: Path) -> dict:
    ckpt = run_dir / "iter-0001" / "checkpoint"
    parts = sorted((run_dir / "iter-0001" / "scored").glob("part-*.parquet"))
    return {
        "tensors": {k: v for k, v in load_file(ckpt / "model.safetensors").items()},
        "metrics": [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()],
        "scored": [p.read_bytes() for p in parts],
        "report": (run_dir / "eval" / "step-0002" / "report.json").read_text(),
    }


def same(a: dict, b: dict) -> None:
    import torch

    assert a["tensors"].keys() == b["tensors"].keys()
    for key in a["tensors"]:
        assert torch.equal(a["tensors"][key], b["tensors"][key]), key
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "tokens_per_s")} for m in ms]  # noqa: E731
    assert strip(a["metrics"]) == strip(b["metrics"])
    assert a["scored"] == b["scored"] and a["report"] == b["report"]


def test_run_killed_at_random_points_finishes_like_an_uninterrupted_run(models, tmp_path):
    full = run_cli(*loop_args(models, tmp_path / "full"), "--json")
    assert full.returncode == 0, full.stderr
    summary = json.loads(full.stdout)
    assert summary["iterations"] == 2 and set(summary["evals"]) == {"step-0000", "step-0002"}
    for name in (
        "iter-0000/rollouts",
        "iter-0000/scored",
        "iter-0000/checkpoint",
        "iter-0001/checkpoint",
        "report.md",
        "reward.png",
        "eval.png",
    ):
        assert (tmp_path / "full" / name).exists(), name
    reference = final_state(tmp_path / "full")

    # Kill at two different points (a seeded draw of delays), re-run until it completes.
    for delay in (2.5, 6.0):
        run_dir = tmp_path / f"killed-{delay}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "rladctl", *loop_args(models, run_dir)],
            env=dict(os.environ, RLADCTL_QUIET="1"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        again = run_cli(*loop_args(models, run_dir))
        assert again.returncode == 0, again.stderr
        same(final_state(run_dir), reference)


def test_compare_writes_a_results_page_from_real_runs(models, tmp_path):
    """Two methods x two seeds, one iteration each: the page's numbers come from the eval reports."""
    args = loop_args(models, tmp_path / "unused")[2:]  # the --set pairs, without "run RECIPE"
    results = tmp_path / "results.md"
    done = run_cli(
        "compare",
        str(REPO / "recipes" / "demo.toml"),
        "--seeds",
        "2",
        "--methods",
        "grpo,rlad",
        "--out",
        str(tmp_path / "cmp"),
        "--results",
        str(results),
        *args,
        "--set",
        "run.iterations=1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    page = results.read_text()
    assert "| base " in page and "| grpo " in page and "| rlad " in page and "rlad - grpo" in page
    assert "The paper's ordering" in page and (tmp_path / "results-reward.png").exists()
    verdict = page.split("## Verdict\n", 1)[1].split("\n## ", 1)[0].strip()
    assert verdict == ordering_verdict(mean_column(page))  # computed from the numbers the page prints
    assert "Produced by `rladctl compare " in page and "--seeds 2 --methods grpo,rlad" in page
    # The base row's Mean@K is the mean of the two base evaluations' reports.
    means = [
        json.loads((tmp_path / "cmp" / "eval" / f"base-seed{s}" / "report.json").read_text())["summaries"][
            f"base-seed{s}"
        ]["overall"]["mean"]
        for s in (0, 1)
    ]
    assert f"{sum(means) / 2:.3f} ±" in page.split("| base ")[1].split("\n")[0]
    # A method's numbers are its run's own final evaluation (run with that seed's eval settings), not a second one.
    means = [
        json.loads((tmp_path / "cmp" / f"grpo-seed{s}" / "eval" / "step-0001" / "report.json").read_text())[
            "summaries"
        ]["step-0001"]["overall"]["mean"]
        for s in (0, 1)
    ]
    assert f"{sum(means) / 2:.3f} ±" in page.split("| grpo ")[1].split("\n")[0]
    assert sorted(p.name for p in (tmp_path / "cmp" / "eval").iterdir()) == ["base-seed0", "base-seed1", "teacher"]


@pytest.mark.slow
def test_demo_improves_the_student_within_ten_minutes(tmp_path):
    """The README's main command, end to end (about 5 minutes on 2 cores): RLAD must help, by the
    issue's margin, and GRPO is trained from the same student beside it."""
    started = time.perf_counter()
    done = run_cli("demo", "--out", str(tmp_path / "demo"), "--json", timeout=900)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary["after"]) == {"RLAD", "GRPO"} and "this run" in summary["verdict"]
    assert summary["after"]["RLAD"]["Mean@8"] >= summary["before"]["Mean@8"] + 0.05, summary
    assert summary["teacher"]["Mean@8"] >= 0.85  # the warm-up's checked target
    assert time.perf_counter() - started < 600
    assert (tmp_path / "demo" / "rlad" / "report.md").exists() and (tmp_path / "demo" / "grpo" / "report.md").exists()
