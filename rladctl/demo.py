"""`rladctl demo`: the whole pipeline on tiny local models, on a CPU, in minutes.

1. build a tiny teacher and a smaller student that share one tokenizer (trained on the task's text);
2. make the teacher competent by supervised warm-up on gold answers, the student only briefly;
3. run RLAD (the `trrd` objective) for a few on-policy iterations with `rladctl run`;
4. evaluate the student before and after (Mean@k, Pass@k on held-out prompts) and print both.
Models are cached under ``<out>/models``: a second run reuses them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from rladctl.config import LoadedRecipe, load_recipe
from rladctl.progress import log


@dataclass(frozen=True)
class DemoModel:
    name: str
    preset: str
    warmup_steps: int
    seed: int


TEACHER = DemoModel("teacher", "tiny-4m", warmup_steps=600, seed=1)
STUDENT = DemoModel("student", "tiny-1m", warmup_steps=60, seed=0)


def recipe_path(name: str = "demo.toml") -> Path:
    return Path(str(files("rladctl.recipes") / name))


def build_model(recipe: LoadedRecipe, spec: DemoModel, root: Path, tokenizer_from: Path | None) -> Path:
    """Init + warm-up, skipped when a finished model of the same spec is cached."""
    from rladctl.models import init_model
    from rladctl.tasks import build_task
    from rladctl.warmup import warmup

    path = root / spec.name
    stamp = {"preset": spec.preset, "warmup_steps": spec.warmup_steps, "seed": spec.seed, "task": recipe.to_dict()["task"], "prompt": recipe.to_dict()["prompt"]}
    stamp_file = path / "demo-model.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        log(f"reusing {path}")
        return path
    texts = None if tokenizer_from else build_task(recipe.task).corpus(4000)
    init_model(path, spec.preset, tokenizer=tokenizer_from, texts=texts, vocab_size=512, seed=spec.seed, overwrite=True)
    warmup(recipe, path, steps=spec.warmup_steps, batch_size=64, lr=1e-3, seed=spec.seed)
    stamp_file.write_text(json.dumps(stamp, indent=2, sort_keys=True))
    return path


@dataclass
class DemoSummary:
    run_dir: str
    seconds: float
    before: dict[str, float]
    after: dict[str, float]
    report: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_demo(out: str | Path = "runs/demo", iterations: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DemoSummary:
    from rladctl.stages.run import run_loop

    started = time.perf_counter()
    out = Path(out)
    base = load_recipe(recipe_path(), overrides)
    teacher = build_model(base, TEACHER, out / "models", None)
    student = build_model(base, STUDENT, out / "models", teacher)
    sets = [f'run.dir="{out / "rlad"}"', f'run.student="{student}"', f'run.teacher="{teacher}"']
    if iterations is not None:
        sets.append(f"run.iterations={iterations}")
    recipe = load_recipe(recipe_path(), [*overrides, *sets])
    summary = run_loop(recipe)
    steps = sorted(summary.evals)
    return DemoSummary(summary.run_dir, time.perf_counter() - started, summary.evals[steps[0]], summary.evals[steps[-1]], summary.report)
