"""`rladctl eval`: sample n >= K completions per held-out prompt, verify, report Pass@k and Mean@k.

Each model gets an eval artifact ``<out>/<label>/`` (rollout rows + ``correct``), produced by the
same sampling path as rollout, so it resumes the same way. ``--from`` skips sampling and scores
existing rollouts/eval artifacts. All models land in one report: ``report.json``, ``report.md``,
``pass_at_k.png`` and ``difficulty.png``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import schema as S
from rladctl.artifacts import open_artifact
from rladctl.config import EvalConfig, LoadedRecipe, RolloutConfig, TaskConfig, build_recipe
from rladctl.errors import ConfigError
from rladctl.progress import log


@dataclass
class EvalResult:
    out: str
    K: int
    header: list[str]
    rows: list[list[str]]
    summaries: dict[str, Any]
    report: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "K": self.K, "report": self.report, "summaries": {k: v.to_dict() for k, v in self.summaries.items()}}


def labels_for(cfg: EvalConfig, sources: list[str]) -> list[str]:
    if cfg.labels:
        if len(cfg.labels) != len(sources):
            raise ConfigError(f"{len(cfg.labels)} labels for {len(sources)} models", "in eval.labels", "give one label per model or none")
        return list(cfg.labels)
    labels, seen = [], {}
    for src in sources:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(src.rstrip("/")).name or "model")
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return labels


def sample_model(recipe: LoadedRecipe, cfg: EvalConfig, model: str, out: Path, n: int, overwrite: bool) -> Path:
    from rladctl.stages.rollout import generate_artifact

    rollout_cfg = RolloutConfig(
        model=model, out=str(out), backend=cfg.backend, split="eval", num_prompts=cfg.num_prompts or recipe.task.eval_size,
        group_size=n, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
        batch_size=cfg.batch_size, prompts_per_part=max(1, 512 // n), dtype=cfg.dtype, device=cfg.device,
        trust_remote_code=cfg.trust_remote_code,
    )
    threshold = cfg.threshold
    correct = lambda cols: {S.CORRECT: [r >= threshold for r in cols[S.REWARD]]}  # noqa: E731
    generate_artifact(recipe, rollout_cfg, S.EVAL, overwrite, extra_columns=correct, extra_manifest={"eval": {"threshold": threshold, "pass_at": cfg.pass_at}})
    return out


def prompt_results(path: Path, difficulty_field: str = ""):
    """Per-prompt scores of an artifact, with each prompt's difficulty level from its task."""
    from rladctl.metrics import PromptResult
    from rladctl.tasks import build_task

    artifact = open_artifact(path, (S.ROLLOUTS, S.SCORED, S.EVAL), role="eval")
    task_cfg = artifact.manifest.get("task") or {}
    if difficulty_field:
        task_cfg = task_cfg | {"difficulty_field": difficulty_field}
    task = build_task(build_recipe({"task": task_cfg}).task) if task_cfg else None
    table = artifact.table([S.PROMPT_ID, S.TASK_METADATA, S.REWARD])
    by_prompt: dict[str, PromptResult] = {}
    for pid, meta, reward in zip(table[S.PROMPT_ID].to_pylist(), table[S.TASK_METADATA].to_pylist(), table[S.REWARD].to_pylist()):
        if pid not in by_prompt:
            level = task.difficulty(json.loads(meta)) if task is not None else None
            by_prompt[pid] = PromptResult(pid, None if level is None else str(level), [])
        by_prompt[pid].scores.append(float(reward))
    return list(by_prompt.values())


def run_eval(recipe: LoadedRecipe, overwrite: bool = False) -> EvalResult:
    from rladctl.metrics import summarize
    from rladctl.report import comparison_rows, write_report

    cfg: EvalConfig = recipe.eval
    K = cfg.pass_at
    n = cfg.n or K
    if K < 1:
        raise ConfigError(f"--pass-at must be >= 1, got {K}", None, "use e.g. --pass-at 32")
    if n < K:
        raise ConfigError(f"pass@{K} needs at least {K} samples per prompt but eval.n is {n}", None, f"set eval.n >= {K} or lower --pass-at")
    if bool(cfg.models) == bool(cfg.from_artifacts):
        raise ConfigError("give either models to sample or artifacts to score", "for eval", "pass --model DIR (repeatable) or --from ARTIFACT (repeatable)")
    if not cfg.out:
        raise ConfigError("no output directory given", "for eval", "pass --out DIR or set eval.out")
    out = Path(cfg.out)
    sources = list(cfg.models or cfg.from_artifacts)
    labels = labels_for(cfg, sources)
    summaries = {}
    for label, source in zip(labels, sources):
        path = sample_model(recipe, cfg, source, out / label, n, overwrite) if cfg.models else Path(source)
        results = prompt_results(path, recipe.task.difficulty_field)
        summaries[label] = summarize(results, K, threshold=cfg.threshold, bootstrap=cfg.bootstrap, seed=cfg.seed)
        log(f"eval {label}: Mean@{K} {summaries[label].overall.mean:.3f}, Pass@{K} {summaries[label].overall.pass_at[K]:.3f}")
    title = f"rladctl eval: {recipe.task.name if cfg.models else 'artifacts'}, Pass@{K} / Mean@{K}"
    files = write_report(out, summaries, K, title)
    header, rows = comparison_rows(summaries, K)
    return EvalResult(str(out), K, header, rows, summaries, {k: str(v) for k, v in files.items()})
