"""Per-iteration wall time of `rladctl run`, split into compute and overhead, with models kept in
memory (after) and reloaded every stage (before: ``run.keep_models=false``, every checkpoint with its
AdamW state, as the loop ran before resident models).

Compute is the time inside the sampler's ``generate`` (rollout tokens), the scorer's ``score``
(teacher log-probs) and train's log-prob passes and optimizer steps (``fixed_logprobs`` and
``train_steps``). Overhead is the rest of the iteration: model and tokenizer loads, checkpoint saves
(``save_whole``), the optimizer state's load, artifact reads and writes, the iteration record and
pruning, and setup. Evaluation is left out (the run evaluates only at the end here). The first
iteration (cold: imports, the first loads) is reported apart; the table is the median of the rest.

    python benchmarks/run_overhead.py --setting demo      # recipes/demo.toml with the demo's models
    python benchmarks/run_overhead.py --setting 50m       # tiny-50m student and teacher, random init
    python benchmarks/run_overhead.py --setting demo --iterations 4 --json

``--models DIR`` reuses a directory holding ``student/`` and ``teacher/`` (for the demo setting, the
``models/`` folder of an `rladctl demo --out` run); without it they are built under ``--workdir``
(the demo's pair is built by the demo's own warm-up, which takes minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock  # noqa: E402

PHASES = ("rollout tokens", "scoring", "train", "loads", "saves", "other overhead")
COMPUTE = PHASES[:3]


CLOCK = Clock()


def instrument(clock: Clock) -> None:
    import rladctl.backends.hf as hf
    import rladctl.models.loading as loading
    import rladctl.models.tokenizer as tokenizer
    import rladctl.stages.train as train

    clock.wrap(hf.HFGenerator, "generate", "rollout tokens")
    clock.wrap(hf.HFScorer, "score", "scoring")
    clock.wrap(train, "fixed_logprobs", "train")
    clock.wrap(train, "train_steps", "train")
    clock.wrap(loading, "load_model", "loads")
    clock.wrap(tokenizer, "load_tokenizer", "loads")
    clock.wrap(train, "load_training_state", "loads")
    clock.wrap(train, "save_whole", "saves")


def models_for(setting: str, workdir: Path, given: str | None) -> tuple[Path, Path]:
    if given:
        return Path(given) / "student", Path(given) / "teacher"
    root = workdir / f"models-{setting}"
    if setting == "demo":
        from rladctl.config import load_recipe
        from rladctl.stages.demo import STUDENT, TEACHER, build_model, recipe_path

        base = load_recipe(recipe_path(), [])
        teacher = build_model(base, TEACHER, root, None)
        return build_model(base, STUDENT, root, teacher), teacher
    from rladctl.models.factory import init_model

    teacher = root / "teacher"
    if not (teacher / "model.safetensors").exists():
        init_model(teacher, "tiny-50m", vocab_size=512, seed=1, overwrite=True, texts=corpus())
    student = root / "student"
    if not (student / "model.safetensors").exists():
        init_model(student, "tiny-50m", tokenizer=teacher, seed=0, overwrite=True)
    return student, teacher


def corpus() -> list[str]:
    from rladctl.config import load_recipe
    from rladctl.stages.demo import recipe_path
    from rladctl.tasks.catalog import build_task

    return build_task(load_recipe(recipe_path(), []).task).corpus(4000)


def measure(setting: str, mode: str, iterations: int, workdir: Path, models: tuple[Path, Path]) -> dict:
    """One `rladctl run` of ``iterations`` (in this process); per-iteration seconds per phase."""
    import rladctl.stages.run as run
    from rladctl.config import load_recipe

    clock = CLOCK
    rows: list[dict[str, float]] = []

    def iteration(*args, **kwargs):
        clock.now.clear()
        t0 = time.perf_counter()
        out = plain_iteration(*args, **kwargs)
        rows.append({"wall": time.perf_counter() - t0, **clock.now})
        return out

    def after(fn):
        def timed(*args, **kwargs):  # the record and the pruning belong to the iteration just run
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if rows:
                rows[-1]["wall"] += time.perf_counter() - t0
            return out

        return timed

    plain_iteration, plain_write, plain_prune = run.run_iteration, run.Records.write, run.Records.prune
    run.run_iteration, run.Records.write, run.Records.prune = iteration, after(plain_write), after(plain_prune)
    student, teacher = models
    sets = [
        f'run.dir="{workdir / f"run-{setting}-{mode}"}"',
        f'run.student="{student}"',
        f'run.teacher="{teacher}"',
        f"run.iterations={iterations}",
        "run.eval_before=false",
        "eval.num_prompts=8",  # the one evaluation at the end, outside the timed iterations
    ]
    if mode == "before":
        sets += ["run.keep_models=false", "run.optimizer_state_every=1"]
    try:
        run.run_loop(load_recipe(str(REPO / "recipes" / "demo.toml"), sets), overwrite=True)
    finally:
        run.run_iteration, run.Records.write, run.Records.prune = plain_iteration, plain_write, plain_prune
    return {"setting": setting, "mode": mode, "iterations": [split(r) for r in rows]}


def split(row: dict[str, float]) -> dict[str, float]:
    named = sum(row.get(p, 0.0) for p in PHASES[:-1])
    out = {p: row.get(p, 0.0) for p in PHASES[:-1]}
    out["other overhead"] = row["wall"] - named
    out["wall"] = row["wall"]
    return out


def median_row(result: dict) -> dict[str, float]:
    """Medians over the warm iterations, each column on its own (compute and overhead per iteration first)."""
    warm = result["iterations"][1:] or result["iterations"]
    rows = [r | {"compute": sum(r[p] for p in COMPUTE)} for r in warm]
    rows = [r | {"overhead": r["wall"] - r["compute"], "share": (r["wall"] - r["compute"]) / r["wall"]} for r in rows]
    return {k: statistics.median(r[k] for r in rows) for k in (*PHASES, "compute", "overhead", "wall", "share")}


def table(results: list[dict]) -> str:
    heads = [f"{r['setting']} {r['mode']}" for r in results]
    meds = [median_row(r) for r in results]
    lines = [f"{'seconds per iteration':<24}" + "".join(f"{h:>14}" for h in heads)]
    for p in (*PHASES, "compute", "overhead", "wall"):
        lines.append(f"{p:<24}" + "".join(f"{m[p]:>14.3f}" for m in meds))
    lines.append(f"{'overhead share':<24}" + "".join(f"{m['share']:>13.1%} " for m in meds))
    lines.append(f"{'first iteration':<24}" + "".join(f"{r['iterations'][0]['wall']:>14.3f}" for r in results))
    lines.append("(medians of the iterations after the first, each row on its own)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=("demo", "50m"), nargs="+", default=["demo", "50m"])
    ap.add_argument("--modes", choices=("before", "after"), nargs="+", default=["before", "after"])
    ap.add_argument("--iterations", type=int, default=4, help="per run; the first is reported apart")
    ap.add_argument("--workdir", default="/tmp/rladctl-run-overhead")
    ap.add_argument("--models", help="a directory with student/ and teacher/ (one --setting only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    instrument(CLOCK)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.models and len(args.setting) > 1:
        sys.exit("--models goes with one --setting")
    results = []
    for setting in args.setting:
        models = models_for(setting, workdir, args.models)
        for mode in args.modes:
            results.append(measure(setting, mode, args.iterations, workdir, models))
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
