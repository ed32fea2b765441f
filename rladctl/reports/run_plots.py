"""The plots of the run report, one PNG each beside report.md: reward (raw and smoothed), the
evaluations with their intervals, clip and clamp fractions, response length, teacher log-ratio.

A plot whose series have no value (no teacher, so no log-ratio; no evaluation) is not written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# name -> (the row keys it draws with their legend labels, y label, title)
PANELS: dict[str, tuple[dict[str, str], str, str]] = {
    "clipping": (
        {
            "clip_frac_low": "PPO clip low (A < 0, r < 1 - eps_low)",
            "clip_frac_high": "PPO clip high (A > 0, r > 1 + eps_high)",
            "teacher_clamp_frac": "teacher clamp (|lp - lp_T| > c)",
        },
        "fraction of completion tokens",
        "clip and clamp fractions",
    ),
    "length": ({"response_tokens": "mean completion length"}, "tokens", "response length"),
    "teacher": ({"teacher_logratio_mean": "lp - lp_T"}, "nats per token (mean)", "teacher log-ratio"),
}


def write_run_plots(
    out: Path, rows: list[dict], rewards: list[float | None], window: int, points: dict[int, Any], K: int
) -> dict[str, str]:
    """Write the plots that have data into ``out``; {name: file name}, in report order."""
    written = {}
    if points:
        written["eval"] = eval_plot(Path(out) / "eval.png", points, K).name
    iterations = [r["iteration"] for r in rows]
    panels = {"reward": ({"rollout reward": rewards}, "mean reward of the rollouts", "training reward")}
    for name, (keys, ylabel, title) in PANELS.items():
        panels[name] = ({label: [r.get(key) for r in rows] for key, label in keys.items()}, ylabel, title)
    for name, (series, ylabel, title) in panels.items():
        series = {label: ys for label, ys in series.items() if any(y is not None for y in ys)}
        if series:
            written[name] = lines(Path(out) / f"{name}.png", iterations, series, window, ylabel, title).name
    return written


def moving_average(values: list[float | None], window: int) -> list[float | None]:
    """Trailing mean over the last ``window`` values (fewer at the start); None values are skipped."""
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(recent) / len(recent) if recent else None)
    return out


def lines(
    path: Path, xs: list[float], series: dict[str, list[float | None]], window: int, ylabel: str, title: str
) -> Path:
    """One colour per series: each iteration's value faint, its trailing moving average over
    ``window`` iterations solid (window 1: the values alone). None values leave a gap."""
    from rladctl.reports.eval_report import _figure, _save

    nan = lambda ys: [float("nan") if y is None else y for y in ys]  # noqa: E731
    fig, ax = _figure()
    for label, ys in series.items():
        if window > 1:
            (raw,) = ax.plot(xs, nan(ys), alpha=0.3, linewidth=0.8)
            ax.plot(xs, nan(moving_average(ys, window)), color=raw.get_color(), linewidth=2, label=label)
        else:
            ax.plot(xs, nan(ys), marker="o" if len(xs) <= 50 else None, label=label)
    ax.set_xlabel(f"iteration (faint: each one; solid: moving average of {window})" if window > 1 else "iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


def eval_plot(path: Path, points: dict[int, Any], K: int) -> Path:
    """Mean@K and Pass@K per evaluation, each with its 95% bootstrap band when the summary has one."""
    from rladctl.reports.eval_report import _figure, _save

    fig, ax = _figure()
    xs = list(points)
    for label, values, cis in (
        (f"Mean@{K}", [s.mean for s in points.values()], [s.mean_ci for s in points.values()]),
        (f"Pass@{K}", [s.pass_at[K] for s in points.values()], [s.pass_at_ci.get(K) for s in points.values()]),
    ):
        (line,) = ax.plot(xs, values, marker="o", label=label)
        if all(ci for ci in cis):
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("iterations (policy updates)")
    ax.set_ylabel("held-out score (band: 95% bootstrap interval)")
    ax.set_title("evaluation")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)
