"""rladctl demo: the verdict line is computed from the numbers, and bad options are one line each."""

from __future__ import annotations

import pytest
from conftest import run_cli

from rladctl.stages.demo import DemoSummary


def summary(rlad: float, grpo: float) -> DemoSummary:
    after = {"RLAD": {"Mean@8": rlad, "Pass@8": 0.9}, "GRPO": {"Mean@8": grpo, "Pass@8": 0.9}}
    return DemoSummary("runs/demo/rlad", 1.0, 0, {"Mean@8": 0.4, "Pass@8": 0.8}, after, {}, {})


@pytest.mark.parametrize(
    ("rlad", "grpo", "line"),
    [
        (0.55, 0.52, "RLAD was ahead of GRPO in this run by 0.030 Mean@8"),
        (0.50, 0.525, "GRPO was ahead of RLAD in this run by 0.025 Mean@8"),
        (0.5, 0.5, "RLAD and GRPO ended level on Mean@8 in this run"),
    ],
)
def test_verdict_names_the_method_ahead_and_by_how_much(rlad, grpo, line):
    assert summary(rlad, grpo).verdict("Mean@8").startswith(line)


def test_verdict_of_a_single_method_reports_its_own_gain():
    one = DemoSummary("runs/demo/rlad", 1.0, 0, {"Mean@8": 0.4, "Pass@8": 0.8}, {"RLAD": {"Mean@8": 0.45}}, {}, {})
    assert (
        one.verdict("Mean@8") == "RLAD moved Mean@8 by +0.050 from the same start in this run (one seed, one method)."
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "rlad,gpro"], "unknown demo method 'gpro'"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_demo_refuses_bad_options_in_one_line_before_any_work(tmp_path, args, message):
    done = run_cli("demo", "--out", str(tmp_path / "demo"), *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and message in done.stderr
    assert not (tmp_path / "demo").exists()
