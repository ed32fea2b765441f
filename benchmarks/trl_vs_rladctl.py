"""One RLAD iteration of rladctl (rollout + score-teacher + train) vs one TRL GRPOTrainer step.

    bash scripts/setup-bench.sh                               # .venv-bench: CPU torch + trl + rladctl
    .venv-bench/bin/python benchmarks/trl_vs_rladctl.py [--student tiny-10m] [--teacher tiny-50m] [--prompts 2] [--group 8] [--max-new-tokens 128]

The defaults are the issue's anchor setting: a 10M student, 16 completions of up to 128 tokens.

TRL is a baseline here, never a dependency of rladctl: it lives in its own environment. Both sides
get the same random-init student (--student preset, float32, CPU), the same chain_sum prompts in the
same order (P per step), the same G, max completion length, sampling (temperature 1, top_p 1), lr,
one optimizer step per iteration over all P x G completions, no KL reference (TRL beta = 0), no
gradient checkpointing, and the same torch CPU threads (one process).

    rladctl  one iteration of the on-policy loop, `run_iteration` as `rladctl run` calls it
             (run_rollout -> run_score_teacher -> run_train, objective trrd, run.keep_models as
             set): every stage writes its Parquet/checkpoint artifact and manifest, and the
             iteration also scores every sampled token with a teacher (--teacher preset) that TRL
             does not have
    TRL      one GRPOTrainer optimizer step (generation, reward, forward/backward, optimizer), timed
             from on_step_begin to on_step_end; the model stays in memory, nothing is written

The two alternate: TRL step k, then rladctl iteration k (run from a TRL callback, so one process
holds both), for --warmup untimed + --repeats timed iterations; the table shows medians.
Without TRL importable, the rladctl half still runs and the exact import error is printed.
The two sides sample different completions (different samplers), so their lengths differ by chance
whenever rows stop early: the verdict compares seconds per completion token over the timed
iterations. Exit status 1 when that rladctl / TRL ratio exceeds --max-ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TASK  # noqa: E402

STAGES = ("rollout", "score-teacher", "train")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join("/tmp", "rladctl-bench-trl"), help="models and run artifacts go here"
    )
    parser.add_argument("--student", default="tiny-10m", help="rladctl.models preset of the student (trained by both)")
    parser.add_argument(
        "--teacher", default="tiny-10m", help="preset of the teacher rladctl scores with (its own seed)"
    )
    parser.add_argument(
        "--teacher-dtype",
        default="bfloat16",
        choices=["float32", "bfloat16"],
        help="score_teacher.dtype (the teacher is frozen and only scores; the student stays float32)",
    )
    parser.add_argument("--prompts", type=int, default=2, help="P prompts per step")
    parser.add_argument("--group", type=int, default=8, help="G completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per side first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--max-ratio", type=float, default=1.0, help="fail when rladctl / TRL time exceeds this")
    parser.add_argument(
        "--reward",
        default="parity",
        choices=["parity", "verifier"],
        help="parity: 1 when the completion's length in characters is odd, on both sides, so advantages are not all 0 "
        "(a random-init student never solves the task, and with the verifier every GRPO update is zero)",
    )
    parser.add_argument(
        "--trl-bf16",
        action="store_true",
        help="GRPOConfig(bf16=True) for TRL: bf16 autocast in its generation and training",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra rladctl recipe override, e.g. train.recompute_old=false (repeatable)",
    )
    parser.add_argument("--summary", help="also write the result as JSON here (for benchmarks/run_all.py)")
    return parser.parse_args(argv)


def build_models(args: argparse.Namespace, task) -> tuple[Path, Path]:
    """Student and teacher sharing one tokenizer, built once under the workdir."""
    from rladctl.models.factory import init_model

    root = Path(args.workdir) / f"models-{args.student}-{args.teacher}"
    teacher, student = root / "teacher", root / "student"
    if not (student / "config.json").exists():
        init_model(teacher, args.teacher, texts=task.corpus(400), vocab_size=320, seed=1, overwrite=True)
        init_model(student, args.student, tokenizer=teacher, seed=0, overwrite=True)
    return student, teacher


def run_recipe(args: argparse.Namespace, student: Path, teacher: Path, run_dir: Path, iterations: int):
    from rladctl.config import load_recipe

    return load_recipe(
        None,
        TASK
        + [
            f'run.dir="{run_dir}"',
            f'run.student="{student}"',
            f'run.teacher="{teacher}"',
            f"run.iterations={iterations}",
            "objective.name=trrd",
            f"rollout.num_prompts={args.prompts}",
            f"rollout.group_size={args.group}",
            f"rollout.max_new_tokens={args.max_new_tokens}",
            f"rollout.batch_size={args.prompts * args.group}",
            "rollout.temperature=1.0",
            "rollout.top_p=1.0",
            'rollout.device="cpu"',
            'score_teacher.device="cpu"',
            'train.device="cpu"',
            f"train.lr={args.lr}",
            "train.epochs=1",
            "train.mini_batches=1",
            f'score_teacher.dtype="{args.teacher_dtype}"',
            *args.overrides,
        ],
    )


class RladctlLoop:
    """Iteration i of the on-policy loop: ``run_iteration``, the very call stages/run.py's run_loop makes."""

    def __init__(self, recipe):
        from rladctl.stages.run import make_plan

        self.recipe, self.plan = recipe, make_plan(recipe)
        self.times: list[dict[str, float]] = []
        self.tokens: list[int] = []

    def iteration(self, i: int) -> None:
        from rladctl.stages.run import run_iteration
        from rladctl.store.checkpoint import read_metrics

        seconds = run_iteration(self.recipe, self.plan, i)
        seconds["total"] = sum(seconds.values())
        self.times.append(seconds)
        self.tokens.append(sum(int(m["tokens"]) for m in read_metrics(self.plan.iter_dir(i) / "checkpoint")))


def trl_trainer(args: argparse.Namespace, recipe, student: Path, callback):
    """A GRPOTrainer on the same student, prompts (in rladctl's order) and settings."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.sampling import prepare_prompts
    from rladctl.tasks.catalog import build_task

    task, steps = build_task(recipe.task), args.warmup + args.repeats
    tokenizer = load_tokenizer(student)
    prompts = prepare_prompts(
        task, recipe.prompt, tokenizer, "train", recipe.rollout.prompt_offset, steps * args.prompts
    )
    data = Dataset.from_dict(
        {"prompt": prompts.texts, "metadata": [json.dumps(item.metadata) for item in prompts.items]}
    )

    def reward(prompts, completions, metadata, **_):
        import rladctl.tasks.catalog as tasks  # looked up at call time: use_parity_reward may have replaced it

        answers = [tasks.extract_answer(c, recipe.prompt) for c in completions]
        return [task.score(json.loads(m), a) if a else 0.0 for m, a in zip(metadata, answers)]

    config = GRPOConfig(
        bf16=args.trl_bf16,
        output_dir=str(Path(args.workdir) / "trl"),
        per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        beta=0.0,
        max_steps=steps,
        gradient_checkpointing=False,
        use_cpu=True,
        shuffle_dataset=False,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(str(student), dtype=torch.float32)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    generate = trainer._generate_and_score_completions  # private, but the one call that samples and scores

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            callback.generation.append(time.perf_counter() - t0)

    trainer._generate_and_score_completions = timed_generate
    return trainer


def make_callback(loop: RladctlLoop, trl_times: list[float], trl_tokens: list[float]):
    from transformers import TrainerCallback

    class Alternate(TrainerCallback):
        """Times each TRL optimizer step, then runs the rladctl iteration of the same index."""

        def __init__(self):
            self.generation: list[float] = []  # seconds in TRL's generate-and-score part of each step
            self.trainer = None

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            trl_times.append(time.perf_counter() - self.t0)
            if self.trainer is not None:
                lengths = self.trainer._metrics["train"].get("completions/mean_length", [])
                trl_tokens.append(lengths[-1] if lengths else float("nan"))
            loop.iteration(len(trl_times) - 1)

    return Alternate()


def use_parity_reward() -> None:
    """Score every completion, on both sides, by the parity of its length (as the test suite does).

    Both rladctl's rollout and the TRL reward function below call ``extract_answer`` and
    ``Task.score`` through the module, so patching the two here changes both.
    """
    import rladctl.tasks.catalog as tasks

    tasks.extract_answer = lambda completion, prompt: completion or "-"
    tasks.GymTask.score = lambda self, metadata, extracted: float(len(extracted) % 2)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RLADCTL_QUIET", "1")
    import torch

    from rladctl.config import load_recipe
    from rladctl.resident import keep_models
    from rladctl.tasks.catalog import build_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reward == "parity":
        use_parity_reward()
    steps = args.warmup + args.repeats
    student, teacher = build_models(args, build_task(load_recipe(None, TASK).task))
    run_dir = Path(args.workdir) / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # every iteration is new work, never a resumed no-op
    recipe = run_recipe(args, student, teacher, run_dir, steps)
    loop = RladctlLoop(recipe)
    trl_times: list[float] = []
    trl_lengths: list[float] = []
    trl_generation: list[float] = []
    try:
        import trl

        trl_error, trl_version = None, trl.__version__
    except Exception as exc:  # noqa: BLE001 - any import failure means: no baseline, say exactly why
        trl_error, trl_version = f"{type(exc).__name__}: {exc}", None
    with keep_models(recipe.run.keep_models):  # as run_loop does
        if trl_error is None:
            callback = make_callback(loop, trl_times, trl_lengths)
            trainer = trl_trainer(args, recipe, student, callback)
            callback.trainer = trainer
            trainer.train()
            trl_generation = callback.generation
        else:
            for i in range(steps):
                loop.iteration(i)
    return report(args, loop, trl_times, trl_lengths, trl_generation, trl_error, trl_version)


def report(args, loop: RladctlLoop, trl_times, trl_lengths, trl_generation, trl_error, trl_version) -> int:
    import torch
    import transformers

    timed = slice(args.warmup, None)
    ours = {k: statistics.median(t[k] for t in loop.times[timed]) for k in (*STAGES, "total")}
    print(
        f"student {args.student} float32, teacher {args.teacher} {args.teacher_dtype} (rladctl only), on cpu ({torch.get_num_threads()} threads); "
        f"{args.prompts} prompts x G={args.group}, max_new_tokens {args.max_new_tokens}, lr {args.lr}, reward {args.reward}"
        f"{', TRL bf16=True' if args.trl_bf16 else ''}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_version or 'not available'}"
        + (f"; rladctl overrides: {' '.join(args.overrides)}" if args.overrides else "")
    )
    print(
        f"{args.repeats} timed iterations per side after {args.warmup} warm-up, alternating TRL step k / rladctl iteration k; medians"
    )
    print(
        f"rladctl completion tokens per iteration: {statistics.median(loop.tokens[timed]):.0f}"
        + (
            f"; TRL mean completion length {statistics.median(trl_lengths[timed]):.1f} x {args.prompts * args.group} rows"
            if trl_lengths
            else ""
        )
    )
    print(f"{'':<34}{'median s':>10}{'min s':>9}{'max s':>9}")
    for k in (*STAGES, "total"):
        values = [t[k] for t in loop.times[timed]]
        label = f"rladctl {k}" if k != "total" else "rladctl RLAD iteration (total)"
        print(f"{label:<34}{statistics.median(values):>10.2f}{min(values):>9.2f}{max(values):>9.2f}")
    if trl_error is not None:
        print(f"TRL GRPOTrainer step: not measured, TRL cannot be imported here: {trl_error}")
        print("(run scripts/setup-bench.sh and use .venv-bench/bin/python)")
        summary = {"rladctl": f"{ours['total']:.2f} s", "baseline": "TRL unavailable", "ratio": "n/a", "ok": None}
        ok = True
    else:
        theirs = trl_times[timed]
        gen = trl_generation[timed]
        if len(gen) == len(theirs):
            print(f"{'TRL generate + reward':<34}{statistics.median(gen):>10.2f}{min(gen):>9.2f}{max(gen):>9.2f}")
            rest = [t - g for t, g in zip(theirs, gen)]
            print(
                f"{'TRL forward/backward + optimizer':<34}{statistics.median(rest):>10.2f}{min(rest):>9.2f}{max(rest):>9.2f}"
            )
        print(f"{'TRL GRPOTrainer step':<34}{statistics.median(theirs):>10.2f}{min(theirs):>9.2f}{max(theirs):>9.2f}")
        ratio = ours["total"] / statistics.median(theirs)
        # The two samplers draw different completions, so one side may stop earlier by chance: the
        # verdict compares seconds per completion token, summed over the timed iterations.
        our_tokens, their_tokens = (
            sum(loop.tokens[timed]),
            sum(n * args.prompts * args.group for n in trl_lengths[timed]),
        )
        per_token = (sum(t["total"] for t in loop.times[timed]) / our_tokens) / (sum(theirs) / their_tokens)
        ok = per_token <= args.max_ratio
        print(
            f"rladctl RLAD iteration / TRL GRPO step = {ratio:.2f}x per iteration (medians), "
            f"{per_token:.2f}x per completion token ({our_tokens} vs {their_tokens:.0f} tokens); target <= {args.max_ratio}x per token: {'ok' if ok else 'FAIL'}"
        )
        summary = {
            "rladctl": f"{ours['total']:.2f} s/iter",
            "baseline": f"{statistics.median(theirs):.2f} s/step (TRL {trl_version})",
            "ratio": f"{ratio:.2f}x/iter, {per_token:.2f}x/token",
            "ok": ok,
        }
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump({"benchmark": "RLAD iteration vs TRL GRPO step", "target": f"<= {args.max_ratio}x", **summary}, f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
