"""`rladctl compare`: the paper's comparison in miniature.

The same tiny student (same start weights, same prompts, same number of iterations, rows and
optimizer steps) is trained once per method and seed with `rladctl run`, then every final student
and the untouched base are evaluated on the same held-out prompts. The results page reports Mean@K
and Pass@K per method and difficulty level as mean and spread over seeds, reward curves, the
training diagnostics that explain them (clip fractions, teacher log-ratio and clamp fraction) and
wall time. Methods are compared at equal optimizer steps and samples, the paper's axis.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl.config import LoadedRecipe
from rladctl.errors import ConfigError
from rladctl.progress import log


@dataclass
class MethodRun:
    method: str
    seed: int
    overall: Any  # metrics.GroupSummary of the final student
    by_difficulty: dict[str, Any]
    seconds: float
    iterations: list[dict[str, Any]]  # run_report.iteration_rows


def run_method(recipe: LoadedRecipe, method: str, seed: int, out: Path, student: str, teacher: str) -> MethodRun:
    from rladctl.objectives import method_objectives
    from rladctl.reports.run_report import iteration_rows
    from rladctl.stages.run import evaluate_point, make_plan, run_loop

    objective = method_objectives()[method]
    sets = recipe.replace(
        "run", dir=str(out / f"{method}-seed{seed}"), student=student, teacher=teacher, eval_before=False, eval_every=0
    )
    sets = sets.replace("objective", name=objective).replace("eval", seed=recipe.eval.seed + seed)
    sets = sets.replace("rollout", seed=recipe.rollout.seed + 1000 * seed).replace(
        "train", seed=recipe.train.seed + seed
    )
    run_loop(sets)
    plan = make_plan(sets)
    # The run evaluated its final student with this seed's eval settings: read that back, sample nothing.
    final = evaluate_point(sets, plan, plan.iterations, overwrite=False).summaries[f"step-{plan.iterations:04d}"]
    rows = iteration_rows(plan)
    # Wall time from the stage manifests, so a re-run that only rebuilds the page reports the same.
    return MethodRun(method, seed, final.overall, final.by_difficulty, sum(r["seconds"] for r in rows), rows)


def evaluate(recipe: LoadedRecipe, model: str, out: Path, label: str, seed: int):
    from rladctl.stages.evaluate import run_eval

    cfg = recipe.replace(
        "eval", models=(model,), from_artifacts=(), labels=(label,), out=str(out), seed=recipe.eval.seed + seed
    )
    result = run_eval(cfg)
    return result.summaries[label]


def run_compare(
    recipe: LoadedRecipe,
    seeds: int,
    methods: list[str],
    out: str | Path,
    results: str | Path | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Train every method for every seed from the same start, evaluate, write the results page."""
    from rladctl.objectives import method_objectives
    from rladctl.stages.demo import STUDENT, TEACHER, build_model

    known = method_objectives()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"unknown method '{unknown[0]}'", "in --methods", f"choose from {', '.join(known)}")
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1", None, "use e.g. --seeds 3")
    out = Path(out)
    started = time.perf_counter()
    student, teacher = recipe.run.student, recipe.run.teacher
    if not student or not teacher:  # build the demo's tiny pair, once, shared by every run
        teacher = str(build_model(recipe, TEACHER, out / "models", None))
        student = str(build_model(recipe, STUDENT, out / "models", Path(teacher)))
    runs: list[MethodRun] = []
    base = []
    for seed in range(seeds):
        log(f"[bold]seed {seed}[/bold]: base student")
        final = evaluate(recipe, student, out / "eval" / f"base-seed{seed}", f"base-seed{seed}", seed)
        base.append(MethodRun("base", seed, final.overall, final.by_difficulty, 0.0, []))
        for method in methods:
            log(f"[bold]seed {seed}[/bold]: {method}")
            runs.append(run_method(recipe, method, seed, out, student, teacher))
    teacher_eval = evaluate(recipe, teacher, out / "eval" / "teacher", "teacher", 0)
    from rladctl.reports.compare_report import write_results

    page = write_results(
        Path(results) if results else out / "results.md",
        recipe,
        base + runs,
        teacher_eval,
        time.perf_counter() - started,
        command,
    )
    return {"results": str(page), "runs": len(runs), "seconds": round(time.perf_counter() - started, 1)}


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
