"""The run report: per-iteration reward and training metrics, eval curves, as Markdown and PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rladctl.store.artifacts import MANIFEST
from rladctl.store.files import atomic_write_bytes

# Training metrics shown per iteration (the last optimizer step of each train call).
TRAIN_COLUMNS = (
    "loss",
    "clip_frac_low",
    "clip_frac_high",
    "ratio_mean",
    "approx_kl_old",
    "teacher_logratio_mean",
    "teacher_clamp_frac",
    "grad_norm",
)


def iteration_rows(plan) -> list[dict[str, Any]]:
    """One dict per finished iteration: rollout reward and the train call's last-step metrics."""
    from rladctl.store.checkpoint import read_metrics

    rows = []
    for i in range(plan.iterations):
        d = plan.iter_dir(i)
        if not (d / "checkpoint" / MANIFEST).exists():
            break
        rollout_manifest = json.loads((d / "rollouts" / MANIFEST).read_text())
        metrics = read_metrics(d / "checkpoint")
        rows.append(
            {
                "iteration": i,
                "reward_mean": _mean([m["reward_mean"] for m in metrics]),
                "rows": rollout_manifest["rows"],
                **{k: _mean([m[k] for m in metrics if k in m]) for k in TRAIN_COLUMNS},
                "seconds": sum(_stage_seconds(d / s) for s in ("rollouts", "scored", "checkpoint")),
            }
        )
    return rows


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stage_seconds(path: Path) -> float:
    file = path / MANIFEST
    if not file.exists():
        return 0.0
    return float(json.loads(file.read_text()).get("timings", {}).get("seconds", 0.0))


def write_run_report(plan, evals: dict[int, Any], K: int) -> Path:
    from rladctl.reports.eval_report import curve_plot, markdown_table

    rows = iteration_rows(plan)
    fmt = lambda v: "" if v is None else f"{v:.4g}"  # noqa: E731
    header = ["iteration", "reward mean", *TRAIN_COLUMNS, "seconds"]
    table = [
        [str(r["iteration"]), fmt(r["reward_mean"]), *[fmt(r[k]) for k in TRAIN_COLUMNS], f"{r['seconds']:.1f}"]
        for r in rows
    ]
    points = {k: next(iter(r.summaries.values())).overall for k, r in sorted(evals.items())}
    eval_header = ["policy updates (iterations)", f"Mean@{K}", "Pass@1", f"Pass@{K}"]
    eval_table = [[str(k), f"{s.mean:.3f}", f"{s.pass_at[1]:.3f}", f"{s.pass_at[K]:.3f}"] for k, s in points.items()]
    curve_plot(
        plan.run_dir / "reward.png",
        {"rollout reward mean": [(r["iteration"], r["reward_mean"]) for r in rows]},
        "iteration",
        "mean reward of the student's rollouts",
        f"{plan.objective}: training reward",
    )
    curve_plot(
        plan.run_dir / "eval.png",
        {
            f"Mean@{K}": [(k, s.mean) for k, s in points.items()],
            f"Pass@{K}": [(k, s.pass_at[K]) for k, s in points.items()],
        },
        "iterations (policy updates)",
        "held-out score",
        f"{plan.objective}: evaluation",
    )
    text = "\n".join(
        [
            f"# rladctl run: {plan.run_dir.name} ({plan.objective})",
            "",
            f"{plan.iterations} iterations, {plan.steps_per_iteration} optimizer steps each. Evaluations: `eval/step-*/report.md`.",
            "",
            "## Evaluation",
            "",
            markdown_table(eval_header, eval_table),
            "",
            "![eval](eval.png)",
            "",
            "## Training, per iteration (means over its optimizer steps)",
            "",
            markdown_table(header, table),
            "",
            "![reward](reward.png)",
            "",
        ]
    )
    path = plan.run_dir / "report.md"
    atomic_write_bytes(path, text.encode())
    return path
