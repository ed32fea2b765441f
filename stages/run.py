"""`rladctl run RECIPE`: the on-policy loop.

Iteration i writes ``RUN_DIR/iter-{i:04d}/{rollouts,scored,checkpoint}``: the latest student samples
fresh prompts, the teacher scores them (objectives that need it), and one train call updates the
student. The objective's registry record says who samples: when it is the teacher (sft), the loop is
offline distillation instead: the *teacher* samples, train keeps the rows its record's filter keeps
(those that reach a reward), and the student is fine-tuned on them. Evaluations land in
``RUN_DIR/eval/step-{k:04d}`` (k = policy updates so far). Every stage skips complete artifacts
whose inputs match, so re-running the same command after any interruption resumes the loop.
The teacher and the newest student stay in memory between stages, on every rank and on a GPU too
unless a vLLM engine shares it (``run.keep_models``, see rladctl/resident.py); every artifact is
written all the same.

A complete iteration leaves a record, ``iter-{i:04d}/_iteration.json``; a resumed run skips the
iterations that have one without opening their files, so older checkpoints and artifacts are
pruned as the run goes (``run.keep_last``, ``run.keep_every``, ``run.keep_artifacts``; see
rladctl/store/iterations.py), keeping what a resume needs.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import distributed, engines
from rladctl.config import ENGINE_SPEED_KEYS, LoadedRecipe, to_plain
from rladctl.errors import ArtifactError, ConfigError
from rladctl.progress import RunStatus, log, status_line
from rladctl.reports.loggers import check_packages, eval_scalars, open_loggers, train_scalars
from rladctl.resident import active, keep_models
from rladctl.store.files import atomic_write_bytes, make_dir
from rladctl.store.iterations import DiskPlan, Ledger, Retention, read_record, remove_record, safetensors_numel
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
    its state on in memory (models not kept, or a GPU shared with a backend's own engine)."""
    import torch

    from rladctl.resident import on_cpu

    device = recipe.train.device
    cpu = on_cpu(device) or (device == "auto" and not torch.cuda.is_available())
    in_memory = recipe.run.keep_models and (cpu or recipe.train.parallel == "fsdp" or keeps_device_models(recipe))
    return not in_memory or (i + 1) % recipe.run.optimizer_state_every == 0 or i + 1 == plan.iterations


def keeps_device_models(recipe: LoadedRecipe) -> bool:
    """Models on a GPU stay in memory between stages, unless a stage's backend is a one-process
    engine (vLLM), which reserves a fraction of each GPU's memory for itself when it starts; models
    on the CPU always do (``run.keep_models``)."""
    from rladctl.backends import get

    stages = (recipe.rollout, recipe.score_teacher, recipe.eval)
    return recipe.run.keep_models and not any(get(t.backend).one_process for t in stages)


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

    distributed.at_stage(f"eval after iteration {k}")
    model = plan.student_at(k, recipe.run.student)
    out = plan.run_dir / "eval" / f"step-{k:04d}"
    if k > 0 and not Path(model).exists() and not overwrite:  # pruned: its evaluation was complete before
        return saved_eval(recipe, out, f"step-{k:04d}", read_record(plan.iter_dir(k - 1))["checkpoint"]["identity"])
    cfg = recipe.replace("eval", models=(model,), from_artifacts=(), labels=(f"step-{k:04d}",), out=str(out))
    return run_eval(cfg, overwrite=overwrite)


def saved_eval(recipe: LoadedRecipe, out: Path, label: str, identity: dict):
    """The result of evaluation ``out`` from its samples, once the checkpoint it evaluated is pruned:
    they must be that checkpoint's (``identity``, from its record) under these eval settings."""
    from rladctl.reports.eval_report import comparison_rows
    from rladctl.reports.metrics import summarize
    from rladctl.stages.evaluate import EvalResult, check_pass_at, prompt_results
    from rladctl.store import schema as S
    from rladctl.store.artifacts import open_artifact

    cfg, K = recipe.eval, recipe.eval.pass_at
    try:
        manifest = open_artifact(out / label, (S.EVAL,), verify=False).manifest
    except ArtifactError:
        manifest = {}
    wanted = {
        "weights": identity.get("weights_hash"),
        "sampling": {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
            "group_size": check_pass_at(cfg),
        },
        "num_prompts": cfg.num_prompts or recipe.task.eval_size,
        "threshold": cfg.threshold,
        "task": to_plain(recipe.task),
        "prompt": to_plain(recipe.prompt),
    }
    found = {
        "weights": manifest.get("model", {}).get("weights_hash"),
        "sampling": manifest.get("sampling"),
        "num_prompts": manifest.get("config", {}).get("num_prompts"),
        "threshold": manifest.get("eval", {}).get("threshold"),
        "task": manifest.get("task"),
        "prompt": manifest.get("prompt"),
    }
    if found != wanted:
        raise ArtifactError(
            f"{out} is not a complete evaluation with these settings, and the checkpoint it evaluates was pruned",
            None,
            "re-run with the [eval] settings the run was started with, or pass --overwrite to run it again",
        )
    _, results = prompt_results(out / label, recipe.task.difficulty_field)
    summary = summarize(results, K, threshold=cfg.threshold, bootstrap=cfg.bootstrap, seed=cfg.seed)
    header, rows = comparison_rows({label: summary}, K)
    return EvalResult(str(out), K, header, rows, {label: summary}, {"md": str(out / "report.md")})


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
        distributed.at_stage(f"{name} of iteration {i + 1}")
        if name == "train":
            engines.sleep()  # kept vLLM engines hand the GPU to train; the next rollout wakes them
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
    with claim_output(cfg.dir, inputs, distributed.is_main()), distributed.watch_ranks(cfg.dir):
        return loop(recipe, overwrite)


def loop(recipe: LoadedRecipe, overwrite: bool = False) -> RunSummary:
    plan = make_plan(recipe)
    make_dir(plan.run_dir)
    atomic_write_bytes(
        plan.run_dir / "recipe.json", (json.dumps(recipe.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    )
    if overwrite:  # newest first: a kill leaves the records of a prefix of the iterations
        distributed.main_only(lambda: [remove_record(plan.iter_dir(i)) for i in reversed(range(plan.iterations))])
    started = time.perf_counter()
    K = recipe.eval.pass_at
    evals: dict[int, Any] = {}
    status = RunStatus(plan.iterations, K)
    loggers = open_loggers(recipe.log, plan.run_dir, plan.run_dir.name, recipe.to_dict())
    step = 0  # optimizer steps so far, counted across iterations: the loggers' x-axis
    records = Records(recipe, plan)
    # vLLM engines built once for the run (rladctl/engines.py); vLLM's log goes to RUN_DIR/vllm.log
    kept_engines = engines.keep_engines(recipe.run.keep_engines, frozen=(recipe.run.teacher,), log_dir=plan.run_dir)
    with (
        loggers,
        status_line(status),
        keep_models(recipe.run.keep_models, on_device=keeps_device_models(recipe)),
        kept_engines,
    ):
        if 0 in plan.eval_points:
            evals[0] = evaluate_point(recipe, plan, 0, overwrite)
            log_eval(loggers, status, evals[0], K, step)
        for i in range(plan.iterations):
            log(f"[bold]iteration {i + 1}/{plan.iterations}[/bold] ({plan.objective})")
            status.start(i)
            record = None if overwrite else records.skippable(i)
            ran = record is None
            if ran:
                run_iteration(recipe, plan, i, overwrite)
                record = records.write(i)
            step = log_iteration(loggers, status, record, i, step)
            if i + 1 in plan.eval_points:
                evals[i + 1] = evaluate_point(recipe, plan, i + 1, overwrite)
                log_eval(loggers, status, evals[i + 1], K, step)
            if ran:
                records.prune(i)
        records.prune(plan.iterations - 1)  # what a kill after the last record left
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


class Records:
    """Iteration records (rladctl/store/iterations.py's ``Ledger``) with what this run expects of
    them: a record may be skipped when it has these settings (``iteration_fingerprint``) and its
    start weights are the previous record's checkpoint, so the chain from ``run.student`` holds
    without opening any pruned file."""

    def __init__(self, recipe: LoadedRecipe, plan: Plan):
        self.recipe, self.plan = recipe, plan
        run = recipe.run
        keep = Retention(run.keep_last, run.keep_every, run.keep_artifacts)
        self.ledger = Ledger(plan.iter_dir, keep, recipe.train.continue_optimizer)
        self._fixed: dict | None = None

    def fixed(self) -> dict:
        """Identities of the start student and the teacher (hashed once, and only when needed)."""
        from rladctl.models.identity import model_identity

        if self._fixed is None:
            run = self.recipe.run
            teacher = run.teacher and (self.plan.needs_teacher or self.plan.sampler == "teacher")
            self._fixed = {
                "student": identity_of(model_identity(run.student)),
                "teacher": identity_of(model_identity(run.teacher)) if teacher else None,
            }
        return self._fixed

    def start(self, i: int) -> dict | None:
        """The identity iteration i's student must have: run.student's, or the previous record's checkpoint."""
        if i == 0:
            return self.fixed()["student"]
        previous = self.ledger.read(i - 1)
        return None if previous is None else previous["checkpoint"]["identity"]

    def fingerprint(self, i: int) -> str:
        return iteration_fingerprint(self.recipe, self.plan, i, self.fixed()["teacher"])

    def skippable(self, i: int) -> dict | None:
        """Iteration i's record when it may be skipped; None when its stages must run (they resume
        or skip its artifacts); a record of other settings is refused with one line."""
        record = self.ledger.read(i)
        if record is None:
            return None
        if record["fingerprint"] != self.fingerprint(i) or record["start"] != self.start(i):
            raise ArtifactError(
                f"iteration {i} in {self.plan.run_dir} was run with other settings or from another model",
                None,
                "re-run with the recipe the run was started with, choose another run.dir, or pass --overwrite",
            )
        return record

    def write(self, i: int) -> dict:
        """Iteration i is complete: its record."""
        from rladctl.models.identity import model_identity
        from rladctl.reports.run_report import iteration_row
        from rladctl.store.checkpoint import read_manifest, read_metrics

        d = self.plan.iter_dir(i)
        checkpoint = d / "checkpoint"
        start = self.start(i) or identity_of(model_identity(self.plan.student_at(i, self.recipe.run.student)))
        record = {
            "iteration": i,
            "fingerprint": self.fingerprint(i),
            "start": start,
            "checkpoint": {
                "identity": identity_of(model_identity(checkpoint)),
                "optimizer_state": read_manifest(checkpoint).get("optimizer_state", True),
            },
            "row": iteration_row(d, i),
            "metrics": read_metrics(checkpoint),
        }
        self.ledger.write(i, record)
        return record

    def prune(self, newest: int) -> None:
        if freed := self.ledger.prune_after(newest):
            log(f"pruned {freed / 1e6:.1f} MB of older iterations (run.keep_last, run.keep_every, run.keep_artifacts)")


def identity_of(identity: dict) -> dict:
    """The parts of a model identity that name its contents, not where it lies."""
    return {k: identity.get(k) for k in ("config_hash", "weights_hash", "tokenizer_hash", "revision")}


def iteration_fingerprint(recipe: LoadedRecipe, plan: Plan, i: int, teacher: dict | None) -> str:
    """What decides iteration i's files besides its start weights: the keys each stage's own
    fingerprint holds (paths, devices and speed settings left out), and the teacher's identity."""
    from rladctl.store.artifacts import fingerprint

    it = iteration_recipe(recipe, plan, i)
    paths = ("out", "device", "model", "input", "inputs", "teacher", *ENGINE_SPEED_KEYS)
    spread = ("save_every", "save_optimizer", "parallel", "micro_batch_tokens", "chunk_tokens")
    plain = lambda table: {k: v for k, v in to_plain(table).items() if k not in (*paths, *spread)}  # noqa: E731
    return fingerprint(
        {
            "task": to_plain(it.task),
            "prompt": to_plain(it.prompt),
            "rollout": plain(it.rollout),
            "score_teacher": plain(it.score_teacher) if plan.needs_teacher else None,
            "train": plain(it.train),
            "objective": to_plain(it.objective),
            "teacher": teacher,
        }
    )


def log_iteration(loggers, status: RunStatus, record: dict, i: int, step: int) -> int:
    """Iteration i's optimizer steps (from its record) to the loggers, numbered on from ``step``,
    and its rollout reward to the status line; the step count after it."""
    for m in record["metrics"]:
        step += 1
        loggers.log(train_scalars(m), step)
    row = record["row"]
    status.finish(i, reward=row["reward_mean"] if row.get("rollout_reward") is None else row["rollout_reward"])
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
        "disk": disk_estimate(recipe, plan),
    }


# Parquet bytes per sampled completion token (ids, log-probs, text, the prompt columns spread over
# the row's tokens; scored rows repeat the rollout's and add lp_T), and the fixed bytes of each part
# (schema and metadata), manifest, evaluation report (JSON, markdown, two plots) and record.
ROLLOUT_BYTES_PER_TOKEN, SCORED_BYTES_PER_TOKEN, TOP_K_BYTES = 12, 16, 8
PART_BYTES, MANIFEST_BYTES, EVAL_REPORT_BYTES, RECORD_BYTES = 6_000, 3_000, 60_000, 2_000


def disk_estimate(recipe: LoadedRecipe, plan: Plan) -> dict[str, Any]:
    """The run directory's size at its peak and at the end, from the student's parameter count
    (its safetensors headers), the artifact sizes and the ``run.keep_*`` keys."""
    from rladctl.models.hub import locate
    from rladctl.stages.evaluate import check_pass_at

    run, rollout = recipe.run, recipe.rollout
    source = locate(run.student)
    numel = None if isinstance(source, str) else safetensors_numel(source)
    if numel is None:
        return {"peak": f"unknown: {run.student} has no local safetensors to count its parameters"}
    others = sum(f.stat().st_size for f in source.iterdir() if f.is_file() and f.suffix != ".safetensors")
    per_token, artifacts = ROLLOUT_BYTES_PER_TOKEN, 2 if plan.needs_teacher else 1
    if plan.needs_teacher:
        per_token += SCORED_BYTES_PER_TOKEN + TOP_K_BYTES * recipe.score_teacher.top_k
    parts = -(-rollout.num_prompts // rollout.prompts_per_part)
    n = check_pass_at(recipe.eval)
    eval_prompts = recipe.eval.num_prompts or recipe.task.eval_size
    eval_parts = -(-eval_prompts // max(1, 512 // n))  # eval's prompts per part (stages/evaluate.py)
    eval_samples = eval_prompts * n * recipe.eval.max_new_tokens * ROLLOUT_BYTES_PER_TOKEN
    checkpoint, optimizer = 4 * numel + others, 8 * numel  # float32 weights; AdamW's two float32 moments
    many_steps = plan.steps_per_iteration > 1 and recipe.train.save_every
    disk = DiskPlan(
        iterations=plan.iterations,
        checkpoint_bytes=checkpoint,
        optimizer_bytes=optimizer,
        artifact_bytes=rollout.num_prompts * rollout.group_size * rollout.max_new_tokens * per_token
        + artifacts * (parts * PART_BYTES + MANIFEST_BYTES),
        snapshot_bytes=2 * (checkpoint + optimizer) if many_steps else 0,  # train keeps its newest 2
        eval_bytes=len(plan.eval_points) * (eval_samples + eval_parts * PART_BYTES + MANIFEST_BYTES + EVAL_REPORT_BYTES)
        + plan.iterations * RECORD_BYTES,
    )
    has_state = [saves_optimizer_state(recipe, plan, i) for i in range(plan.iterations)]
    keep = Retention(run.keep_last, run.keep_every, run.keep_artifacts)
    peak, end = disk.peak(keep, has_state, recipe.train.continue_optimizer)
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    log(f"disk: {mb(peak)} at the peak, {mb(end)} at the end under {plan.run_dir} (run.keep_last = {run.keep_last})")
    return {
        "peak": mb(peak),
        "end": mb(end),
        "peak_bytes": peak,
        "end_bytes": end,
        "student_parameters": numel,
        "checkpoint_bytes": checkpoint,
        "optimizer_state_bytes": optimizer,
        "artifacts_bytes_per_iteration": disk.artifact_bytes,
        "keys": {k: getattr(run, k) for k in ("keep_last", "keep_every", "keep_artifacts", "optimizer_state_every")},
        "assumes": "completions at max_new_tokens; float32 weights; evaluations and records never pruned; "
        "the run's report and plots not counted",
    }
