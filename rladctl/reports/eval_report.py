"""Evaluation reports: markdown tables like the paper's, report.json, and PNG plots.

Tables come as (header, rows) for the CLI to render with rich, and as markdown for report.md.
Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch, so a
caller's notebook backend is left alone). Every file goes through
``rladctl.store.files.atomic_write_bytes`` (hidden temporary sibling, then rename), and a file that
already holds the same bytes is left untouched, so re-running a finished eval changes nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from rladctl.errors import ConfigError, close_matches
from rladctl.reports.metrics import Summary, ks_for, natural_key
from rladctl.store.files import atomic_write_bytes, make_dir

MISSING = "–"  # a cell the summary has no value for (level not evaluated, k not computed)
ALL_LEVELS = "all"  # the last column of a difficulty table: every prompt


# --- tables ---------------------------------------------------------------------------------------


def comparison_rows(summaries: dict[str, Summary], K: int) -> tuple[list[str], list[list[str]]]:
    """One row per label: Mean@K, Pass@1 ... Pass@K as "value ± half-width of the 95% CI"."""
    ks = ks_for(K)
    header = ["model", f"Mean@{K}"] + [f"Pass@{k}" for k in ks] + ["n", "prompts"]
    rows = []
    for label, s in summaries.items():
        g = s.overall
        row = [label, _cell(g.mean, g.mean_ci)]
        row += [_cell(g.pass_at.get(k), g.pass_at_ci.get(k)) for k in ks]
        rows.append(row + [str(g.n), str(g.prompts)])
    return header, rows


def comparison_table(summaries: dict[str, Summary], K: int) -> str:
    """Markdown table of ``comparison_rows``."""
    return markdown_table(*comparison_rows(summaries, K))


def difficulty_levels(summaries: dict[str, Summary]) -> list[str]:
    """Every difficulty level of any summary, in natural order ("2" < "10")."""
    return sorted({lvl for s in summaries.values() for lvl in s.by_difficulty}, key=natural_key)


def difficulty_rows(summaries: dict[str, Summary], K: int, metric: str = "mean") -> tuple[list[str], list[list[str]]]:
    """Rows = labels, columns = difficulty levels then "all" (like the paper's PPL2..PPL8, Avg).

    ``metric`` is "mean" (Mean@K), "accuracy", or "pass@k" for a k in ``ks_for(K)``.
    """
    pick = _metric_getter(metric, K)
    levels = difficulty_levels(summaries)
    header = ["model"] + levels + [ALL_LEVELS]
    rows = []
    for label, s in summaries.items():
        groups = [s.by_difficulty.get(lvl) for lvl in levels] + [s.overall]
        rows.append([label] + [_cell(pick(g) if g else None) for g in groups])
    return header, rows


def difficulty_table(summaries: dict[str, Summary], K: int, metric: str = "mean") -> str:
    """Markdown table of ``difficulty_rows``."""
    return markdown_table(*difficulty_rows(summaries, K, metric))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Padded GitHub markdown; the first column left-aligned, the others right-aligned."""
    cells = [[_md_escape(c) for c in header]] + [[_md_escape(c) for c in row] for row in rows]
    widths = [max(3, *(len(r[j]) for r in cells)) for j in range(len(header))]

    def line(row):
        padded = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join([":" + "-" * (widths[0] - 1)] + ["-" * (w - 1) + ":" for w in widths[1:]]) + " |"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]]) + "\n"


def _metric_getter(metric: str, K: int):
    choices = {"mean": lambda g: g.mean, "accuracy": lambda g: g.accuracy}
    for k in ks_for(K):
        choices[f"pass@{k}"] = lambda g, k=k: g.pass_at.get(k)
    if metric.lower() not in choices:
        raise ConfigError(
            f"unknown metric {metric!r}",
            "in the difficulty table",
            f"{close_matches(metric, choices)} Choose one of {', '.join(choices)}".strip(),
        )
    return choices[metric.lower()]


def _cell(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return MISSING
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} ± {(ci[1] - ci[0]) / 2:.3f}"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- the report -----------------------------------------------------------------------------------


def write_report(out_dir, summaries: dict[str, Summary], K: int, title: str, extra_md: str = "") -> dict[str, Path]:
    """Write report.json, report.md, pass_at_k.png and (when any level exists) difficulty.png.

    Returns their paths keyed "json", "md", "pass_at_k", "difficulty". The same summaries give
    byte-identical report.json and report.md (no timestamps; labels keep the caller's order).
    """
    if not summaries:
        raise ConfigError("nothing to report", "no evaluated models given", "Pass at least one eval artifact")
    out = Path(out_dir)
    make_dir(out)
    paths = {"json": out / "report.json", "md": out / "report.md", "pass_at_k": out / "pass_at_k.png"}
    has_levels = bool(difficulty_levels(summaries))
    if has_levels:
        paths["difficulty"] = out / "difficulty.png"

    pass_at_k_plot(paths["pass_at_k"], summaries, K, title)
    if has_levels:
        difficulty_plot(paths["difficulty"], summaries, K, title)
    _write(paths["json"], report_json(summaries, K, title).encode())
    _write(paths["md"], report_markdown(summaries, K, title, extra_md, has_levels).encode())
    return paths


def report_json(summaries: dict[str, Summary], K: int, title: str) -> str:
    from rladctl import __version__

    thresholds = sorted({s.threshold for s in summaries.values()})
    doc = {
        "title": title,
        "K": K,
        # one value when every model was judged alike; each summary carries its own regardless
        "threshold": thresholds[0] if len(thresholds) == 1 else thresholds,
        "rladctl_version": __version__,
        "summaries": {label: s.to_dict() for label, s in summaries.items()},
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def report_markdown(
    summaries: dict[str, Summary], K: int, title: str, extra_md: str = "", has_levels: bool = True
) -> str:
    first = next(iter(summaries.values()))
    parts = [
        f"# {title}\n",
        f"Correct means score >= {first.threshold:g}; Mean@{K} averages the raw scores. "
        f"± is half the width of the 95% bootstrap interval over prompts "
        f"({first.bootstrap} resamples); exact bounds are in report.json.\n",
        comparison_table(summaries, K),
        "![Pass@k against k](pass_at_k.png)\n",
    ]
    if has_levels:
        parts += [
            f"## Mean@{K} by difficulty\n",
            difficulty_table(summaries, K, "mean"),
            f"## Pass@{K} by difficulty\n",
            difficulty_table(summaries, K, f"pass@{K}"),
            f"![Mean@{K} by difficulty](difficulty.png)\n",
        ]
    if extra_md:
        parts.append(extra_md.rstrip("\n") + "\n")
    return "\n".join(parts)


# --- plots ----------------------------------------------------------------------------------------


MARKERS = "osD^vPX*"
LINESTYLES = ("-", "--", "-.", ":")


def pass_at_k_plot(path, summaries: dict[str, Summary], K: int, title: str) -> Path:
    """Pass@k against k on a log2 axis, one line per label, shaded 95% interval where known.

    The y axis is always [0, 1] (a flat line at 0 stays where it belongs), and each label has its
    own marker, line style and a shrinking marker size, so models with equal scores stay visible.
    """
    ks = ks_for(K)
    fig, ax = _figure(height=4.8)
    for i, (label, s) in enumerate(summaries.items()):
        pts = [(k, s.overall.pass_at[k]) for k in ks if k in s.overall.pass_at]
        if not pts:
            continue
        xs, ys = zip(*pts)
        (line,) = ax.plot(
            xs,
            ys,
            label=label,
            marker=MARKERS[i % len(MARKERS)],
            linestyle=LINESTYLES[i % len(LINESTYLES)],
            markersize=max(3.0, 9.0 - 1.5 * i),
            zorder=2 + i,
        )
        cis = [s.overall.pass_at_ci.get(k) for k in xs]
        if all(cis):
            ax.fill_between(
                xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.15, linewidth=0
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k (samples drawn per prompt)")
    ax.set_ylabel("Pass@k")
    _unit_interval(ax)
    ax.set_title(f"{title}\nPass@k{_samples_note(summaries)}", fontsize="medium")
    ax.grid(True, alpha=0.3)
    _legend_below(fig, summaries)
    return _save(fig, path)


def difficulty_plot(path, summaries: dict[str, Summary], K: int, title: str) -> Path:
    """Grouped bars: Mean@K per difficulty level (then "all"), one bar per label, 95% CI whiskers.

    Each bar carries its value, so a level where a model scores 0 still shows a readable "0.00".
    """
    levels = difficulty_levels(summaries)
    columns = levels + [ALL_LEVELS]
    fig_width = min(11.0, max(6.4, 1.2 + 0.3 * len(columns) * len(summaries)))
    fig, ax = _figure(width=fig_width, height=4.8)
    width = 0.8 / len(summaries)
    crowded = (fig_width - 1.2) / len(columns) * width < 0.3  # inches per bar: "0.00" needs ~0.25
    for i, (label, s) in enumerate(summaries.items()):
        groups = [s.by_difficulty.get(lvl) for lvl in levels] + [s.overall]
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j, g in enumerate(groups) if g]
        present = [g for g in groups if g]
        ys = [g.mean for g in present]
        err = None
        if all(g.mean_ci for g in present):
            err = [[y - g.mean_ci[0] for y, g in zip(ys, present)], [g.mean_ci[1] - y for y, g in zip(ys, present)]]
        bars = ax.bar(xs, ys, width=width, yerr=err, capsize=2, label=label, error_kw={"linewidth": 0.8})
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=6 if crowded else 7, rotation=90 if crowded else 0)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_xlabel("difficulty level")
    ax.set_ylabel(f"Mean@{K}")
    _unit_interval(ax, top=1.15)  # room for the value above a bar at 1.0
    ax.set_title(f"{title}\nMean@{K} by difficulty{_samples_note(summaries)}", fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    _legend_below(fig, summaries)
    return _save(fig, path)


def _unit_interval(ax, top: float = 1.03) -> None:
    ax.set_ylim(-0.03, top)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def _samples_note(summaries: dict[str, Summary]) -> str:
    ns = {s.n for s in summaries.values()}
    return f" (n = {ns.pop()} samples per prompt)" if len(ns) == 1 else ""


def _legend_below(fig, summaries: dict[str, Summary]) -> None:
    # outside the axes: lines and bars reach 1.0 wherever a model solves everything
    fig.legend(loc="outside lower center", ncols=min(len(summaries), 5), frameon=False)


def curve_plot(path, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str) -> Path:
    """Generic line plot, one line per series of (x, y) points (e.g. reward per training iteration)."""
    fig, ax = _figure()
    for label, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) <= 50 else None, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
    return _save(fig, path)


def _figure(width: float = 6.4, height: float = 4.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path) -> Path:
    buffer = io.BytesIO()
    # no "Software" tag: the same data gives the same bytes
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return _write(path, buffer.getvalue())


def _write(path, data: bytes) -> Path:
    """Atomically write ``data`` unless ``path`` already holds exactly these bytes."""
    path = Path(path)
    make_dir(path.parent)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
    except OSError:  # absent or unreadable: write it
        pass
    atomic_write_bytes(path, data)
    return path
