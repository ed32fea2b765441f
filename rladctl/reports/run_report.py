"""The run report of `rladctl run`: report.md with a compact per-iteration table, the evaluations
with their intervals, and PNG plots beside it (``run_plots``); every iteration in iterations.csv."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rladctl.reports.run_plots import moving_average, write_run_plots
from rladctl.store.artifacts import MANIFEST
from rladctl.store.files import atomic_write_bytes

MAX_TABLE_ROWS = 20  # report.md shows every stride-th iteration, at most this many, then the last

# Training metrics per iteration (token means over its optimizer steps, from train's metrics.jsonl).
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
    """One dict per finished iteration (``iteration_row``): from its record, which outlives the
    iteration's pruned files (rladctl/store/iterations.py), else from its artifacts."""
    from rladctl.store.iterations import read_record

    rows = []
    for i in range(plan.iterations):
        record = read_record(plan.iter_dir(i))
        if record is not None:
            rows.append(record["row"])
        elif (plan.iter_dir(i) / "checkpoint" / MANIFEST).exists():
            rows.append(iteration_row(plan.iter_dir(i), i))
        else:
            break
    return rows


def iteration_row(d: Path, i: int) -> dict[str, Any]:
    """What iteration ``i``'s artifacts in ``d`` held and its train call's metrics.

    ``rollout_reward`` is the mean over every sampled row; ``reward_mean`` is train's, over the rows
    it kept (without the groups whose rewards all agree, unless the objective keeps every row).
    """
    from rladctl.store.checkpoint import read_metrics

    rollout_manifest = json.loads((d / "rollouts" / MANIFEST).read_text())
    metrics = read_metrics(d / "checkpoint")
    return {
        "iteration": i,
        "reward_mean": _mean([m["reward_mean"] for m in metrics]),
        **_rollout_stats(d / "rollouts"),
        "rows": rollout_manifest["rows"],
        **{k: _mean([m[k] for m in metrics if k in m]) for k in TRAIN_COLUMNS},
        "seconds": sum(_stage_seconds(d / s) for s in ("rollouts", "scored", "checkpoint")),
    }


def _rollout_stats(path: Path) -> dict[str, float | None]:
    """Mean reward and mean completion length (tokens) over every row of one rollouts artifact."""
    import pyarrow.compute as pc

    from rladctl.store import schema as S
    from rladctl.store.artifacts import open_artifact

    table = open_artifact(path, (S.ROLLOUTS,), verify=False).table([S.REWARD, S.COMPLETION_TOKEN_IDS])
    if table is None or table.num_rows == 0:
        return {"rollout_reward": None, "response_tokens": None}
    lengths = pc.list_value_length(table[S.COMPLETION_TOKEN_IDS])
    return {
        "rollout_reward": float(pc.mean(table[S.REWARD]).as_py()),
        "response_tokens": float(pc.mean(lengths).as_py()),
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stage_seconds(path: Path) -> float:
    file = path / MANIFEST
    if not file.exists():
        return 0.0
    return float(json.loads(file.read_text()).get("timings", {}).get("seconds", 0.0))


def table_picks(n: int, max_rows: int = MAX_TABLE_ROWS) -> list[int]:
    """Row indices the table shows: all of them up to max_rows + 1, else every ceil(n / max_rows)-th
    from the first, plus the last (300 iterations: 0, 15, ..., 285 and 299)."""
    if n <= max_rows + 1:
        return list(range(n))
    picks = list(range(0, n, math.ceil(n / max_rows)))
    return picks if picks[-1] == n - 1 else [*picks, n - 1]


def smoothing_window(n: int, max_rows: int = MAX_TABLE_ROWS) -> int:
    """Iterations in the reward's moving average: the table's stride, so each shown row averages
    the iterations since the one above it."""
    return max(1, math.ceil(n / max_rows))


def rollout_rewards(rows: list[dict[str, Any]]) -> list[float | None]:
    """Reward over every sampled row per iteration; train's kept-row mean where that is unknown."""
    return [r["reward_mean"] if r.get("rollout_reward") is None else r["rollout_reward"] for r in rows]


def write_run_report(plan, evals: dict[int, Any], K: int) -> Path:
    """report.md, its plots and iterations.csv in ``plan.run_dir``; ``evals`` maps iterations done
    (policy updates) to that point's eval result."""
    points = {k: next(iter(r.summaries.values())).overall for k, r in sorted(evals.items())}
    intro = (
        f"{plan.iterations} iterations, {plan.steps_per_iteration} optimizer steps each. "
        "Evaluations: `eval/step-*/report.md`."
    )
    return render_run_report(
        plan.run_dir, f"{plan.run_dir.name} ({plan.objective})", intro, iteration_rows(plan), points, K
    )


def render_run_report(out: Path, title: str, intro: str, rows: list[dict], points: dict[int, Any], K: int) -> Path:
    """Write report.md, the PNGs it links and iterations.csv into ``out``; ``points`` maps
    iterations done to a GroupSummary (mean, pass_at and, when bootstrapped, their intervals)."""
    from rladctl.reports.eval_report import markdown_table

    out = Path(out)
    window = smoothing_window(len(rows))
    plots = write_run_plots(out, rows, rollout_rewards(rows), window, points, K)
    atomic_write_bytes(out / "iterations.csv", iterations_csv(rows))
    header, table = iteration_table(rows, window)
    shown = f"one row per {window} iterations and the last" if window > 1 else "every iteration"
    links = {name: f"![{name}]({file})\n" for name, file in plots.items()}  # each image its own paragraph
    about = (
        f"{len(rows)} iterations: {shown} below, all of them in `iterations.csv`. Reward: the mean over "
        f"every sampled row, and its trailing moving average over {window} iteration(s). Training "
        "metrics: means over each iteration's optimizer steps."
    )
    lines = [f"# rladctl run: {title}", "", intro, ""]
    lines += ["## Evaluation", "", markdown_table(*eval_table(points, K)), links.pop("eval", "")]
    lines += ["## Training", "", about, "", markdown_table(header, table), *links.values()]
    path = out / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


def iteration_table(rows: list[dict], window: int) -> tuple[list[str], list[list[str]]]:
    fmt = lambda v: "" if v is None else f"{v:.4g}"  # noqa: E731
    rewards = rollout_rewards(rows)
    smooth = moving_average(rewards, window)
    header = ["iteration", "reward", f"reward (avg {window})", "response tokens", *TRAIN_COLUMNS, "seconds"]
    table = [
        [
            str(rows[i]["iteration"]),
            fmt(rewards[i]),
            fmt(smooth[i]),
            fmt(rows[i].get("response_tokens")),
            *[fmt(rows[i].get(k)) for k in TRAIN_COLUMNS],
            f"{rows[i]['seconds']:.1f}",
        ]
        for i in table_picks(len(rows))
    ]
    return header, table


def eval_table(points: dict[int, Any], K: int) -> tuple[list[str], list[list[str]]]:
    """Mean@K, Pass@1, Pass@K per evaluation, each with its 95% bootstrap interval when there is one."""

    def cell(value: float, ci) -> str:
        return f"{value:.3f}" if not ci else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    header = ["policy updates (iterations)", f"Mean@{K}", "Pass@1", f"Pass@{K}"]
    table = [
        [
            str(k),
            cell(s.mean, s.mean_ci),
            cell(s.pass_at[1], s.pass_at_ci.get(1)),
            cell(s.pass_at[K], s.pass_at_ci.get(K)),
        ]
        for k, s in points.items()
    ]
    return header, table


def iterations_csv(rows: list[dict]) -> bytes:
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["iteration"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
