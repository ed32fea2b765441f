"""`rladctl demo`: the whole pipeline on tiny local models, on a CPU, in minutes.

1. build a tiny teacher and make it competent by supervised warm-up on gold answers, until it
   reaches a held-out Mean@k target (a checked property: a machine where it does not, within the
   step budget, gets one error line instead of a demo that cannot teach);
2. cut the student from it (half its layers) and heal it only until it passes a lower held-out
   target, so it is far weaker but shares the teacher's representation;
3. run each method (RLAD and the GRPO baseline, from the same student and seed) for a few on-policy
   iterations with `rladctl run`;
4. evaluate the student before and after each (Mean@k, Pass@k on held-out prompts).
Models are cached under ``<out>/models``: a second run with the same seed reuses them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from rladctl.config import LoadedRecipe, load_recipe
from rladctl.errors import ConfigError
from rladctl.progress import log


@dataclass(frozen=True)
class DemoModel:
    name: str
    preset: str  # a size preset, or "shrink:<layers>" to cut the model from the teacher
    warmup_steps: int  # the step budget (all of it when target is None)
    seed: int  # added to the demo's --seed
    lr: float
    target: float | None = None  # held-out Mean@k (the demo recipe's eval settings) to stop at
    check_every: int = 50  # warm-up steps between held-out checks


# Measured on this task (3-term sums of digits; 2-core CPU, 1 and 2 threads, seeds 0-2): the
# teacher passes Mean@8 0.85 at T = 0.3 after 350-650 warm-up steps; the budget leaves room for a
# slower machine. The student is cut FROM the teacher (its decoder layers 0 and 3 of 4,
# Minitron-style), so it shares the teacher's representation and its mistakes are near-misses, and
# healed only until it passes held-out Mean@8 0.35 (30-80 steps): a fixed healing length left it
# anywhere between 0.45 and 0.64 depending on the seed and machine, with too little left for 20
# iterations of RL to show (gains of +0.005 to +0.04); from 0.35-0.40 RLAD gained +0.076 to +0.196
# and GRPO +0.076 to +0.208 in 30 iterations (seeds 0-2, 1 and 2 threads; README, "What came out").
TEACHER = DemoModel("teacher", "tiny-1m", warmup_steps=1500, seed=1, lr=3e-3, target=0.85)
STUDENT = DemoModel("student", "shrink:0,3", warmup_steps=400, seed=0, lr=2e-3, target=0.35, check_every=10)


def recipe_path(name: str = "demo.toml") -> Path:
    return Path(str(files("rladctl.recipes") / name))


def build_model(recipe: LoadedRecipe, spec: DemoModel, root: Path, teacher: Path | None, seed: int = 0) -> Path:
    """Init (or cut from ``teacher``) + warm-up, skipped when the same model is already cached."""
    from rladctl.models.factory import init_model, shrink_model
    from rladctl.stages.warmup import warmup
    from rladctl.tasks.catalog import build_task

    path = root / spec.name
    plain = recipe.to_dict()
    task = {k: v for k, v in plain["task"].items() if k != "difficulty_field"}  # reports only
    stamp = {**spec.__dict__, "seed": spec.seed + seed, "task": task, "prompt": plain["prompt"]}
    if spec.target is not None:  # the check samples with the eval settings
        stamp["eval"] = {k: plain["eval"][k] for k in ("pass_at", "temperature", "top_p", "max_new_tokens")}
    if teacher is not None:
        stamp["teacher"] = json.loads((teacher / STAMP).read_text())
    if (path / STAMP).exists() and json.loads((path / STAMP).read_text()) == stamp:
        log(f"reusing {path}")
        return path
    if spec.preset.startswith("shrink:"):
        shrink_model(teacher, path, [int(i) for i in spec.preset.split(":", 1)[1].split(",")], overwrite=True)
    else:
        texts = None if teacher else build_task(recipe.task).corpus(4000)
        init_model(
            path, spec.preset, tokenizer=teacher, texts=texts, vocab_size=512, seed=stamp["seed"], overwrite=True
        )
    warmup(
        recipe,
        path,
        steps=spec.warmup_steps,
        batch_size=64,
        lr=spec.lr,
        seed=stamp["seed"],
        target=spec.target,
        check_every=spec.check_every,
    )
    (path / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True))
    return path


STAMP = "demo-model.json"


@dataclass
class DemoSummary:
    run_dir: str  # the first method's run
    seconds: float
    seed: int
    before: dict[str, float]
    after: dict[str, dict[str, float]]  # method label -> its final student's metrics
    teacher: dict[str, float]  # the teacher's last warm-up check
    reports: dict[str, str]  # method label -> report.md

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def verdict(self, key: str) -> str:
        """One line: which method ended ahead on ``key`` in this run (one seed, not a significance test)."""
        if len(self.after) < 2:  # --methods named one: nothing to set it beside but its start
            ((only, a),) = self.after.items()
            gain = a[key] - self.before[key]
            return f"{only} moved {key} by {gain:+.3f} from the same start in this run (one seed, one method)."
        (first, a), (second, b) = list(self.after.items())[:2]
        if a[key] == b[key]:
            return f"{first} and {second} ended level on {key} in this run (one seed)."
        ahead, behind = (first, second) if a[key] > b[key] else (second, first)
        return (
            f"{ahead} was ahead of {behind} in this run by {abs(a[key] - b[key]):.3f} {key} "
            f"(one seed; rladctl compare --seeds N measures the spread)."
        )


def run_demo(
    out: str | Path = "runs/demo",
    methods: tuple[str, ...] | list[str] = (),
    iterations: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int = 0,
) -> DemoSummary:
    """Build (or reuse) the pair, then train the same student with each method (``rladctl compare``'s
    method labels; the first is evaluated before training too) and evaluate the results."""
    from rladctl.objectives import method_objectives
    from rladctl.stages.run import run_loop

    if not methods or any(m not in method_objectives() for m in methods):
        bad = next((m for m in methods if m not in method_objectives()), "")
        raise ConfigError(
            f"unknown demo method '{bad}'", "in --methods", f"choose from {', '.join(method_objectives())}"
        )
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}", None, "e.g. --seed 1")
    started = time.perf_counter()
    out = Path(out)
    base = load_recipe(recipe_path(), overrides)
    teacher = build_model(base, TEACHER, out / "models", None, seed)
    student = build_model(base, STUDENT, out / "models", teacher, seed)
    K = base.eval.pass_at
    names = {"mean": f"Mean@{K}", "pass_at_K": f"Pass@{K}"}
    label = lambda values: {names.get(k, k): v for k, v in values.items()}  # noqa: E731
    before, after, reports, first_dir = {}, {}, {}, ""
    for index, method in enumerate(methods):
        sets = [
            f'run.dir="{out / method}"',
            f'run.student="{student}"',
            f'run.teacher="{teacher}"',
            f'objective.name="{method_objectives()[method]}"',
            f"run.eval_before={'true' if index == 0 else 'false'}",  # every method starts from this student
            f"rollout.seed={base.rollout.seed + 1000 * seed}",
            f"train.seed={base.train.seed + seed}",
        ]
        if iterations is not None:
            sets.append(f"run.iterations={iterations}")
        summary = run_loop(load_recipe(recipe_path(), [*overrides, *sets]))
        steps = sorted(summary.evals)
        if index == 0:
            before, first_dir = label(summary.evals[steps[0]]), summary.run_dir
        after[method.upper()], reports[method.upper()] = label(summary.evals[steps[-1]]), summary.report
    teacher_check = json.loads((teacher / "_manifest.json").read_text())["checks"][-1]
    return DemoSummary(
        first_dir,
        time.perf_counter() - started,
        seed,
        before,
        after,
        label({"mean": teacher_check["mean"], "pass_at_K": teacher_check["pass_at_k"]}),
        reports,
    )
