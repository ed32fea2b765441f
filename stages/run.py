"""`rladctl run RECIPE`: the on-policy loop.

Iteration i writes ``RUN_DIR/iter-{i:04d}/{rollouts,scored,checkpoint}``: the latest student samples
fresh prompts, the teacher scores them (objectives that need it), and one train call updates the
student. The objective's registry record says who samples: when it is the teacher (sft), the loop is
offline distillation instead: the *teacher* samples, train keeps the rows its record's filter keeps
(those that reach a reward), and the student is fine-tuned on them. Evaluations land in
``RUN_DIR/eval/step-{k:04d}`` (k = policy updates so far). Every stage skips complete artifacts
whose inputs match, so re-running the same command after any interruption resumes the loop.
Within one process the teacher and the newest student stay in memory between stages
(``run.keep_models``, see rladctl/resident.py); every artifact is written all the same.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import distributed
from rladctl.config import LoadedRecipe, to_plain
from rladctl.errors import ConfigError
from rladctl.progress import RunStatus, log, status_line
from rladctl.reports.loggers import check_packages, eval_scalars, open_loggers, train_scalars
from rladctl.resident import active, keep_models
from rladctl.store.files import atomic_write_bytes, make_dir
from rladctl.store.lock import claim_output


@dataclass
class Plan:
    """Every stage the loop will run, resolved without loading a model."""

    run_dir: Path
    iterations: int
    objective: str
    needs_teacher: bool  # the objective reads teacher log-probs: score-teacher runs, train reads "scored"
    steps_per_iteration: int
    eval_points: list[int]
    sampler: str = "student"  # who samples the rollouts: "student" or "teacher" (the record's sampler)

    def iter_dir(self, i: int) -> Path:
        return self.run_dir / f"iter-{i:04d}"

    def student_at(self, i: int, start: str) -> str:
        return start if i == 0 else str(self.iter_dir(i - 1) / "checkpoint")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "iterations": self.iterations,
            "objective": self.objective,
            "needs_teacher": self.needs_teacher,
            "optimizer_steps_per_iteration": self.steps_per_iteration,
            "eval_after_iterations": self.eval_points,
        }


def make_plan(recipe: LoadedRecipe) -> Plan:
    """Validate the recipe for a run and resolve its schedule (used by --dry-run too)."""
    from rladctl.models.hub import locate
    from rladctl.objectives import get_objective_record
    from rladctl.stages.evaluate import check_pass_at
    from rladctl.tasks.catalog import build_task

    run = recipe.run
    for key in ("dir", "student"):
        if not getattr(run, key):
            raise ConfigError(
                f"no run.{key} given", "for run", f"set run.{key} in the recipe or pass --set run.{key}=..."
            )
    objective = get_objective_record(recipe.objective.name)
    if objective.needs_teacher_model and not run.teacher:
        what = f"objective '{objective.name}' needs a teacher but run.teacher is empty"
        raise ConfigError(what, "for run", "set run.teacher")
    if run.iterations < 1 or run.eval_every < 0 or run.optimizer_state_every < 1:
        raise ConfigError(
            "run.iterations and run.optimizer_state_every must be >= 1 and run.eval_every >= 0", None, "fix the recipe"
        )
    for path in (run.student, run.teacher):
        if path:
            locate(path)  # a missing local path fails here, before any work
    check_pass_at(recipe.eval)  # the first evaluation would refuse it only after the run dir exists
    check_packages(recipe.log)  # log.tensorboard / log.wandb without its package
    build_task(recipe.task).items("train", recipe.rollout.prompt_offset, 1)
    points = [0] if run.eval_before else []
    if run.eval_every:
        points += list(range(run.eval_every, run.iterations, run.eval_every))
    points.append(run.iterations)
    return Plan(
        Path(run.dir),
        run.iterations,
        objective.name,
        objective.needs_teacher_logprobs,
        recipe.train.epochs * recipe.train.mini_batches,
        sorted(set(points)),
        sampler=objective.sampler,
    )


def iteration_recipe(recipe: LoadedRecipe, plan: Plan, i: int) -> LoadedRecipe:
    """The stage tables of iteration i: paths, prompt window, seeds and the schedule horizon."""
    run, rollout, train = recipe.run, recipe.rollout, recipe.train
    d = plan.iter_dir(i)
    student = plan.student_at(i, run.student)
    sampler = run.teacher if plan.sampler == "teacher" else student
    data = d / ("scored" if plan.needs_teacher else "rollouts")
    recipe = recipe.replace(
        "rollout",
        model=sampler,
        out=str(d / "rollouts"),
        prompt_offset=rollout.prompt_offset + i * rollout.num_prompts,
        seed=rollout.seed + i,
        policy_step=i,
    )
    recipe = recipe.replace("score_teacher", teacher=run.teacher, input=str(d / "rollouts"), out=str(d / "scored"))
    recipe = recipe.replace("log", tensorboard=False, wandb=False)  # the loop logs train's steps (log_iteration)
    return recipe.replace(
        "train",
        model=student,
        inputs=(str(data),),
        out=str(d / "checkpoint"),
        seed=train.seed + i,
        total_steps=train.total_steps or plan.iterations * plan.steps_per_iteration,
        save_optimizer=saves_optimizer_state(recipe, plan, i),
    )


def saves_optimizer_state(recipe: LoadedRecipe, plan: Plan, i: int) -> bool:
    """Every run.optimizer_state_every-th checkpoint and the last; all of them when train cannot hand
    its state on in memory (models not kept, a GPU, several ranks, or FSDP2's shards)."""
    import torch

    from rladctl.resident import on_cpu

    device = recipe.train.device
    cpu = on_cpu(device) or (device == "auto" and not torch.cuda.is_available())
    in_memory = recipe.run.keep_models and cpu and distributed.world_size() == 1 and recipe.train.parallel != "fsdp"
    return not in_memory or (i + 1) % recipe.run.optimizer_state_every == 0 or i + 1 == plan.iterations


def rebuild_optimizer_state(recipe: LoadedRecipe, plan: Plan, i: int, overwrite: bool = False) -> None:
    """Train i continues the AdamW state of iteration i - 1's checkpoint: kept in memory by this
    process, or saved with that checkpoint, or else rebuilt here. The newest checkpoint before i
    that has it (or the start, which has none) is the base; the trains after it are replayed in
    memory from their saved artifacts, each checked to give the saved weights."""
    from rladctl.resident import has_training_state
    from rladctl.stages.train import run_train
    from rladctl.store.checkpoint import is_complete, read_manifest

    def saved(j: int) -> bool:  # checkpoints from before run.optimizer_state_every always hold it
        return (read_manifest(plan.iter_dir(j) / "checkpoint") or {}).get("optimizer_state", True)

    done = is_complete(plan.iter_dir(i) / "checkpoint") and not overwrite  # train i will skip
    if (
        done
        or i == 0
        or not recipe.train.continue_optimizer
        or has_training_state(plan.iter_dir(i - 1) / "checkpoint")
        or saved(i - 1)
    ):
        return
    base = i - 1
    while base > 0 and not saved(base - 1):
        base -= 1
    log(
        f"rebuilding the AdamW state of {plan.iter_dir(i - 1) / 'checkpoint'}: replaying train of iterations {base + 1}-{i}"
    )
    for j in range(base, i):
        run_train(iteration_recipe(recipe, plan, j), replay=True)


def evaluate_point(recipe: LoadedRecipe, plan: Plan, k: int, overwrite: bool):
    from rladctl.stages.evaluate import run_eval

    model = plan.student_at(k, recipe.run.student)
    cfg = recipe.replace(
        "eval",
        models=(model,),
        from_artifacts=(),
        labels=(f"step-{k:04d}",),
        out=str(plan.run_dir / "eval" / f"step-{k:04d}"),
    )
    return run_eval(cfg, overwrite=overwrite)


@dataclass
class RunSummary:
    run_dir: str
    iterations: int
    objective: str
    seconds: float
    final_student: str
    evals: dict[str, dict[str, float]]
    report: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_iteration(recipe: LoadedRecipe, plan: Plan, i: int, overwrite: bool = False) -> dict[str, float]:
    """Rollout, score-teacher (objectives that need it) and train of iteration i; seconds per stage."""
    from rladctl.stages.rollout import run_rollout
    from rladctl.stages.score_teacher import run_score_teacher
    from rladctl.stages.train import run_train

    it = iteration_recipe(recipe, plan, i)
    seconds = {}
    for name, stage in (("rollout", run_rollout), ("score-teacher", run_score_teacher), ("train", run_train)):
        if name == "score-teacher" and not plan.needs_teacher:
            continue
        t0 = time.perf_counter()
        if name == "train":
            with contextlib.nullcontext() if active() else keep_models():  # a replay hands its state on in memory
                rebuild_optimizer_state(recipe, plan, i, overwrite)
                stage(it, overwrite=overwrite)
        else:
            stage(it, overwrite=overwrite)
        seconds[name] = time.perf_counter() - t0
    return seconds


def run_loop(recipe: LoadedRecipe, overwrite: bool = False) -> RunSummary:
    cfg = recipe.run
    inputs = {"student": cfg.student, "teacher": cfg.teacher, "task file": recipe.task.path}
    with claim_output(cfg.dir, inputs, distributed.is_main()):
        return loop(recipe, overwrite)


def loop(recipe: LoadedRecipe, overwrite: bool = False) -> RunSummary:
    plan = make_plan(recipe)
    make_dir(plan.run_dir)
    atomic_write_bytes(
        plan.run_dir / "recipe.json", (json.dumps(recipe.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    )
    started = time.perf_counter()
    K = recipe.eval.pass_at
    evals: dict[int, Any] = {}
    status = RunStatus(plan.iterations, K)
    loggers = open_loggers(recipe.log, plan.run_dir, plan.run_dir.name, recipe.to_dict())
    step = 0  # optimizer steps so far, counted across iterations: the loggers' x-axis
    with loggers, status_line(status), keep_models(recipe.run.keep_models):
        if 0 in plan.eval_points:
            evals[0] = evaluate_point(recipe, plan, 0, overwrite)
            log_eval(loggers, status, evals[0], K, step)
        for i in range(plan.iterations):
            log(f"[bold]iteration {i + 1}/{plan.iterations}[/bold] ({plan.objective})")
            status.start(i)
            run_iteration(recipe, plan, i, overwrite)
            step = log_iteration(loggers, status, plan, i, step)
            if i + 1 in plan.eval_points:
                evals[i + 1] = evaluate_point(recipe, plan, i + 1, overwrite)
                log_eval(loggers, status, evals[i + 1], K, step)
    from rladctl.reports.run_report import write_run_report

    report = write_run_report(plan, evals, K)
    points = {
        f"step-{k:04d}": {
            "mean": r.summaries[next(iter(r.summaries))].overall.mean,
            "pass_at_K": r.summaries[next(iter(r.summaries))].overall.pass_at[K],
        }
        for k, r in evals.items()
    }
    return RunSummary(
        str(plan.run_dir),
        plan.iterations,
        plan.objective,
        time.perf_counter() - started,
        plan.student_at(plan.iterations, recipe.run.student),
        points,
        str(report),
    )


def log_iteration(loggers, status: RunStatus, plan: Plan, i: int, step: int) -> int:
    """Iteration i's optimizer steps (its checkpoint's metrics.jsonl) to the loggers, numbered on from
    ``step``, and its rollout reward to the status line; the step count after it."""
    from rladctl.stages.rollout import summarize
    from rladctl.store.checkpoint import read_metrics

    for m in read_metrics(plan.iter_dir(i) / "checkpoint"):
        step += 1
        loggers.log(train_scalars(m), step)
    status.finish(i, reward=summarize(str(plan.iter_dir(i) / "rollouts"), skipped=True).reward_mean)
    return step


def log_eval(loggers, status: RunStatus, result, K: int, step: int) -> None:
    summary = result.summaries[next(iter(result.summaries))]
    loggers.log(eval_scalars(summary, K), step)
    status.mean_at_k = summary.overall.mean


def dry_run(recipe: LoadedRecipe) -> dict[str, Any]:
    """The resolved plan and recipe, checked, without loading any weights."""
    plan = make_plan(recipe)
    first = iteration_recipe(recipe, plan, 0)
    return {
        "plan": plan.to_dict(),
        "rows_per_iteration": recipe.rollout.num_prompts * recipe.rollout.group_size,
        "iteration_0": {
            "rollout": to_plain(first.rollout),
            "score_teacher": to_plain(first.score_teacher) if plan.needs_teacher else None,
            "train": to_plain(first.train),
        },
        "objective": to_plain(recipe.objective),
        "eval": to_plain(recipe.eval),
    }
