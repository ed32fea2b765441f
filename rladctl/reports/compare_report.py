"""The results page of `rladctl compare`: a Table-1-like summary, diagnostics and reward curves."""

from __future__ import annotations

import statistics
from pathlib import Path

from rladctl.reports.metrics import natural_key
from rladctl.store.files import atomic_write_bytes, make_dir

# Row order of the page; a method not named here (another package's objective) follows, in run order.
ORDER = ["base", "offline", "grpo", "kdrl", "opd", "opd_grpo", "rlad"]
SMOOTH = 10  # iterations in the reward curve's moving mean (each iteration sees new prompts)
DIAGNOSTICS = (
    "teacher_logratio_mean",
    "teacher_clamp_frac",
    "clip_frac_low",
    "clip_frac_high",
    "approx_kl_old",
    "reward_mean",
)


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def _by_method(runs) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for run in runs:
        grouped.setdefault(run.method, []).append(run)
    rank = {m: i for i, m in enumerate(ORDER)}
    return dict(sorted(grouped.items(), key=lambda item: rank.get(item[0], len(ORDER))))  # stable sort


def results_table(runs, K: int) -> tuple[list[str], list[list[str]]]:
    grouped = _by_method(runs)
    levels = sorted({lvl for r in runs for lvl in r.by_difficulty}, key=natural_key)
    header = ["method", f"Mean@{K}", f"Pass@{K}", *[f"Mean@{K} L{lvl}" for lvl in levels], "train wall s / run"]
    rows = []
    for method, group in grouped.items():
        rows.append(
            [
                method,
                _ms([r.overall.mean for r in group]),
                _ms([r.overall.pass_at[K] for r in group]),
                *[_ms([r.by_difficulty[lvl].mean for r in group if lvl in r.by_difficulty]) for lvl in levels],
                f"{statistics.fmean([r.seconds for r in group]):.0f}" if method != "base" else "–",
            ]
        )
    return header, rows


def paired_gaps(runs, K: int, against: str = "grpo") -> list[list[str]]:
    """Per-seed differences from one method (the seeds share start weights and prompts)."""
    grouped = _by_method(runs)
    if against not in grouped:
        return []
    ref = {r.seed: r.overall.mean for r in grouped[against]}
    rows = []
    for method, group in grouped.items():
        if method == against:
            continue
        diffs = [r.overall.mean - ref[r.seed] for r in group if r.seed in ref]
        wins = sum(d > 0 for d in diffs)
        rows.append([f"{method} - {against}", _ms(diffs), f"{wins}/{len(diffs)}"])
    return rows


def diagnostics(runs) -> list[list[str]]:
    rows = []
    for method, group in _by_method(runs).items():
        if method in ("base", "offline"):  # no ratio, no teacher term: nothing to diagnose
            continue
        for label, pick in (("first", 0), ("last", -1)):
            values = [r.iterations[pick] for r in group if r.iterations]
            cells = []
            for key in DIAGNOSTICS:
                xs = [v[key] for v in values if v.get(key) is not None]
                cells.append(f"{statistics.fmean(xs):.3g}" if xs else "–")
            rows.append([method, f"{label} iteration", *cells])
    return rows


def write_results(path: Path, recipe, runs, teacher, seconds: float, command: str = "") -> Path:
    from rladctl.reports.eval_report import curve_plot, markdown_table
    from rladctl.reports.run_report import rollout_rewards

    K = recipe.eval.pass_at
    header, rows = results_table(runs, K)
    seeds = sorted({r.seed for r in runs})
    curves = {}
    for method, group in _by_method(runs).items():
        if method in ("base", "offline"):  # offline trains on reward-filtered teacher rows (reward 1)
            continue
        length = min(len(r.iterations) for r in group)
        # The rollouts' own mean: train's reward_mean leaves out the groups it drops (not opd's).
        per_iter = [statistics.fmean(rollout_rewards([r.iterations[i] for r in group])) for i in range(length)]
        curves[method] = [(i, statistics.fmean(per_iter[max(0, i - SMOOTH + 1) : i + 1])) for i in range(length)]
    png = path.with_name(path.stem + "-reward.png")
    make_dir(path.parent)
    curve_plot(
        png,
        curves,
        "iteration (one optimizer step each)" if recipe.train.epochs * recipe.train.mini_batches == 1 else "iteration",
        f"student's rollout reward (moving mean of {SMOOTH})",
        f"training reward, mean over {len(seeds)} seeds",
    )
    verdict = ordering_verdict({row[0]: tuple(map(float, row[1].split(" ± "))) for row in rows})
    r, t = recipe.rollout, recipe.train
    text = "\n".join(
        [
            "# rladctl compare: RLAD and its baselines in miniature",
            "",
            f"Produced by `{command or 'rladctl compare'}` in {seconds / 60:.1f} min of wall time; the training stages took "
            f"{sum(r.seconds for r in runs) / 60:.1f} min in all on this machine "
            f"(from their manifests; evaluations excluded). Task `{recipe.task.name}` "
            f"(config {recipe.task.config}, mix {recipe.task.mix}), {recipe.run.iterations} iterations x {r.num_prompts} prompts x G = {r.group_size}, "
            f"{t.epochs * t.mini_batches} optimizer step(s) per iteration, lr {t.lr}; evaluation on {recipe.eval.num_prompts or recipe.task.eval_size} held-out prompts, "
            f"n = {recipe.eval.n or K}, temperature {recipe.eval.temperature}, top_p {recipe.eval.top_p}. "
            f"Seeds: {len(seeds)} (mean ± sample std over seeds). Every method starts from the same student weights and sees the same prompts.",
            "",
            f"Teacher (reference): Mean@{K} {teacher.overall.mean:.3f}, Pass@{K} {teacher.overall.pass_at[K]:.3f}.",
            "",
            "## Results",
            "",
            markdown_table(header, rows),
            "",
            "## Paired differences in Mean@K (same seed, same start)",
            "",
            markdown_table(["comparison", "mean ± std", "seeds ahead"], paired_gaps(runs, K)),
            "",
            "## Verdict",
            "",
            verdict,
            "",
            "## Training diagnostics (means over seeds)",
            "",
            markdown_table(["method", "when", *DIAGNOSTICS], diagnostics(runs)),
            "",
            f"![reward curves]({png.name})",
            "",
        ]
    )
    atomic_write_bytes(path, text.encode())
    return path


def mean_column(text: str) -> dict[str, tuple[float, float]]:
    """Method -> (mean, std) of Mean@K, read back from a results page's "## Results" table."""
    table = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    stats = {}
    for line in lines[2:]:  # after the header and the alignment row
        cells = [c.strip() for c in line.strip("|").split("|")]
        mean, _, sd = cells[1].partition(" ± ")
        stats[cells[0]] = (float(mean), float(sd))
    return stats


def ordering_verdict(stats: dict[str, tuple[float, float]]) -> str:
    """Does Mean@K order RLAD > KDRL > GRPO > base, each gap larger than the seed spread? Computed from
    the numbers as the page prints them (``mean_column``), so a reader can check it by hand."""
    chain = [m for m in ("rlad", "kdrl", "grpo", "base") if m in stats]
    lines, ordered = [], True
    for hi, lo in zip(chain, chain[1:]):
        (m_hi, sd_hi), (m_lo, sd_lo) = stats[hi], stats[lo]
        gap = round(m_hi - m_lo, 3)
        clear = gap > max(sd_hi, sd_lo)
        ordered = ordered and clear
        lines.append(
            f"- {hi} vs {lo}: {gap:+.3f} Mean@K ({'above, gap larger than the spread' if clear else 'not clearly above'})"
        )
    head = "The paper's ordering (RLAD > KDRL > GRPO > base on Mean@K, gaps larger than the spread) " + (
        "holds here." if ordered else "does NOT hold here."
    )
    best = max(stats, key=lambda m: stats[m][0])
    return "\n".join([head, *lines, f"- highest Mean@K: {best} ({stats[best][0]:.3f} ± {stats[best][1]:.3f})"])
