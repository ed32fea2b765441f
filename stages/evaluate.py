"""`rladctl eval`: sample n >= K completions per held-out prompt, verify, report Pass@k and Mean@k.

Each model gets an eval artifact ``<out>/<label>/`` (rollout rows + ``correct``; the label made a
safe, unique directory name), produced by the same sampling path as rollout, so it resumes the
same way. ``--from`` skips sampling and scores existing rollouts/eval artifacts. All models land
in one report: ``report.json``, ``report.md``, ``pass_at_k.png`` and ``difficulty.png``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import distributed
from rladctl.config import EvalConfig, LoadedRecipe, RolloutConfig, build_recipe
from rladctl.errors import ArtifactError, ConfigError
from rladctl.progress import log
from rladctl.sampling import generate_artifact
from rladctl.store import schema as S
from rladctl.store.artifacts import open_artifact, validate_rewards
from rladctl.store.lock import claim_output


@dataclass
class EvalResult:
    out: str
    K: int
    header: list[str]
    rows: list[list[str]]
    summaries: dict[str, Any]  # label -> metrics.Summary, in the order the models were given
    report: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "K": self.K,
            "report": self.report,
            "summaries": {k: v.to_dict() for k, v in self.summaries.items()},
        }


def safe_name(text: str) -> str:
    """A directory name for a label: no separators, no leading dots ("..", ".hidden")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip(".") or "model"


def unique(names: list[str]) -> list[str]:
    """Repeats get -2, -3, ... suffixes; a suffix never takes a name that another source has."""
    originals, out = set(names), []
    for name in names:
        candidate, i = name, 1
        while candidate in out or (i > 1 and candidate in originals):
            i += 1
            candidate = f"{name}-{i}"
        out.append(candidate)
    return out


def labels_for(cfg: EvalConfig, sources: list[str]) -> list[str]:
    """Row names: ``eval.labels`` as given, else each source's directory name (repeats get -2 ...)."""
    if not cfg.labels:
        return unique([safe_name(Path(src.rstrip("/")).name) for src in sources])
    if len(cfg.labels) != len(sources):
        raise ConfigError(
            f"{len(cfg.labels)} labels for {len(sources)} models", "in eval.labels", "give one label per model or none"
        )
    repeated = sorted({label for label in cfg.labels if cfg.labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"label {repeated[0]!r} is given twice", "in eval.labels", "give every model its own label")
    return list(cfg.labels)


def sample_model(recipe: LoadedRecipe, cfg: EvalConfig, model: str, out: Path, n: int, overwrite: bool) -> Path:
    """Sample ``n`` completions per eval-split prompt into the eval artifact ``out`` (resumable)."""
    rollout_cfg = RolloutConfig(
        **cfg.engine(),
        model=model,
        out=str(out),
        split="eval",
        num_prompts=cfg.num_prompts or recipe.task.eval_size,
        group_size=n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        prompts_per_part=max(1, 512 // n),
    )
    threshold = cfg.threshold

    def correct(cols: dict[str, list]) -> dict[str, list]:
        return {S.CORRECT: [reward >= threshold for reward in cols[S.REWARD]]}

    # The threshold decides the `correct` column, so it is part of the artifact's identity; K is
    # not (it only changes the report), so a new --pass-at reuses the samples.
    extra = {"eval": {"threshold": threshold}}
    generate_artifact(recipe, rollout_cfg, S.EVAL, overwrite, extra_columns=correct, extra_manifest=extra)
    return out


def difficulty_of(task_cfg: dict, difficulty_field: str):
    """``metadata -> level or None`` for the task an artifact's manifest records.

    Uses the Task base class's rule (task.difficulty_field, else the task's default field) without
    building the task, so scoring an artifact needs neither its data file nor its dataset.
    """
    from rladctl.tasks.catalog import Task

    if not task_cfg:
        return lambda metadata: None
    cfg = build_recipe({"task": task_cfg | ({"difficulty_field": difficulty_field} if difficulty_field else {})}).task
    probe = Task(cfg)
    probe.name = cfg.name
    return probe.difficulty


def prompt_results(path: Path, difficulty_field: str = ""):
    """``(task name, per-prompt scores)`` of an artifact, each prompt with its difficulty level."""
    from rladctl.reports.metrics import PromptResult

    artifact = open_artifact(path, (S.ROLLOUTS, S.SCORED, S.EVAL), role="eval")
    if artifact.rows == 0:
        raise ArtifactError(
            f"eval artifact {path} has no rows",
            None,
            "score an artifact with rows: re-run rladctl rollout or eval with at least one prompt",
        )
    task_cfg = artifact.manifest.get("task") or {}
    level_of = difficulty_of(task_cfg, difficulty_field)
    table = artifact.table([S.PROMPT_ID, S.TASK_METADATA, S.REWARD])
    validate_rewards(table, str(path))
    by_prompt: dict[str, PromptResult] = {}
    for pid, meta, reward in zip(
        table[S.PROMPT_ID].to_pylist(), table[S.TASK_METADATA].to_pylist(), table[S.REWARD].to_pylist()
    ):
        if pid not in by_prompt:
            level = level_of(json.loads(meta))
            by_prompt[pid] = PromptResult(pid, None if level is None else str(level), [])
        by_prompt[pid].scores.append(float(reward))
    return task_cfg.get("name", ""), list(by_prompt.values())


def check_pass_at(cfg: EvalConfig) -> int:
    """Refuse a K that n samples per prompt cannot serve; returns n (also checked by `run --dry-run`)."""
    K, n = cfg.pass_at, cfg.n or cfg.pass_at
    if K < 1:
        raise ConfigError(f"--pass-at must be >= 1, got {K}", None, "use e.g. --pass-at 32")
    if n < K:
        raise ConfigError(
            f"pass@{K} needs at least {K} samples per prompt but eval.n is {n}",
            None,
            f"set eval.n >= {K} or lower --pass-at",
        )
    return n


def check_request(cfg: EvalConfig) -> int:
    """Refuse impossible requests before any model loads; returns n, the samples per prompt."""
    n = check_pass_at(cfg)
    if bool(cfg.models) == bool(cfg.from_artifacts):
        raise ConfigError(
            "give either models to sample or artifacts to score",
            "for eval",
            "pass --model DIR (repeatable) or --from ARTIFACT (repeatable)",
        )
    if not cfg.out:
        raise ConfigError("no output directory given", "for eval", "pass --out DIR or set eval.out")
    return n


def run_eval(recipe: LoadedRecipe, overwrite: bool = False) -> EvalResult:
    cfg = recipe.eval
    inputs = {"model": cfg.models, "artifact": cfg.from_artifacts, "task file": recipe.task.path}
    with claim_output(cfg.out, inputs, distributed.is_main()):
        return evaluate(recipe, overwrite)


def evaluate(recipe: LoadedRecipe, overwrite: bool) -> EvalResult:
    from rladctl.reports.eval_report import comparison_rows, write_report
    from rladctl.reports.metrics import summarize

    cfg: EvalConfig = recipe.eval
    K, n = cfg.pass_at, check_request(cfg)
    out = Path(cfg.out)
    sources = list(cfg.models or cfg.from_artifacts)
    labels = labels_for(cfg, sources)
    dirs = unique([safe_name(label) for label in labels])
    summaries, tasks = {}, []
    for label, dir_name, source in zip(labels, dirs, sources):
        path = sample_model(recipe, cfg, source, out / dir_name, n, overwrite) if cfg.models else Path(source)
        task_name, results = prompt_results(path, recipe.task.difficulty_field)
        tasks.append(task_name)
        try:
            summaries[label] = summarize(results, K, threshold=cfg.threshold, bootstrap=cfg.bootstrap, seed=cfg.seed)
        except ConfigError as exc:  # name the artifact: with several, "the eval results" is ambiguous
            raise ConfigError(exc.what, f"in {path}", exc.fix) from None
        log(
            f"eval {label}: Mean@{K} {summaries[label].overall.mean:.3f}, Pass@{K} {summaries[label].overall.pass_at[K]:.3f}"
        )
    task_names = ", ".join(dict.fromkeys(t for t in tasks if t)) or "artifacts"
    # Under torchrun every rank sampled its share of the parts; rank 0 alone writes the report.
    files = write_report(out, summaries, K, f"rladctl eval: {task_names}") if distributed.is_main() else {}
    header, rows = comparison_rows(summaries, K)
    return EvalResult(str(out), K, header, rows, summaries, {k: str(v) for k, v in files.items()})
