"""Supervised warm-up on gold answers: how toy teachers (and students) become competent.

The paper's teachers are strong pretrained models. On a machine without a model hub, rladctl makes
a competent tiny teacher instead by plain supervised training on the task's gold answers: prompt
(rendered exactly as rollout renders it) -> ``gold</answer><eos>`` with the masked NLL of the
completion (the ``sft`` objective). The model directory is replaced atomically at the end.

How many steps make a model competent depends on the machine (float reduction order, thread
count), so competence is checked, not assumed: with ``target`` set, every ``check_every`` steps the
model samples ``k`` answers (the recipe's eval.pass_at, its temperature and top_p) for the first
``check_prompts`` held-out (eval split) questions, and the warm-up stops at the first check whose
Mean@k reaches the target. A budget spent without reaching it is one error line, and the model
directory is left as it was.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rladctl.config import LoadedRecipe, to_plain
from rladctl.errors import ConfigError, ModelError
from rladctl.progress import log, meter


@dataclass
class WarmupSummary:
    model: str
    steps: int  # steps taken (fewer than the budget when the target was reached early)
    batch_size: int
    seconds: float
    final_nll: float
    target: float | None = None  # held-out Mean@k the warm-up had to reach (None: no check)
    checks: list[dict[str, float]] = field(default_factory=list)  # {"step", "mean", "pass_at_k"} per check

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def gold_completion(answer: str, prompt_cfg) -> str:
    """What a perfect completion looks like after the prompt's answer prefix."""
    if prompt_cfg.answer_prefix.rstrip().endswith("<answer>"):
        return f"{answer}</answer>"
    return f"<answer>{answer}</answer>"


def held_out_check(recipe: LoadedRecipe, task, model, tokenizer, prompts: int, seed: int) -> dict[str, float]:
    """Mean@k and Pass@k of ``model`` on the first ``prompts`` eval-split questions, k = eval.pass_at
    samples each at the eval temperature and top_p (a sample counts when it reaches eval.threshold)."""
    from rladctl.backends.base import SamplingParams, eos_token_ids
    from rladctl.backends.hf import HFGenerator
    from rladctl.sampling import prepare_prompts, sample_rows
    from rladctl.store import schema as S

    cfg, k = recipe.eval, recipe.eval.pass_at
    items = prepare_prompts(task, recipe.prompt, tokenizer, "eval", 0, prompts, "--check-prompts")
    generator = HFGenerator(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=cfg.batch_size)
    was_training = model.training
    model.eval()
    params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, seed)
    rewards = sample_rows(task, recipe.prompt, items, generator, params, k, 0)[S.REWARD]
    model.train(was_training)
    scores_PK = torch.tensor(rewards, dtype=torch.float64).view(len(items.items), k)  # [P, k]
    return {
        "mean": float(scores_PK.mean()),
        "pass_at_k": float((scores_PK >= cfg.threshold).any(dim=1).double().mean()),
    }


def warmup(
    recipe: LoadedRecipe,
    model_dir: str | Path,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    target: float | None = None,
    check_every: int = 50,
    check_prompts: int = 64,
) -> WarmupSummary:
    """Train ``model_dir`` in place for at most ``steps`` AdamW steps on gold (prompt, answer) pairs.

    With ``target``, stop at the first held-out check (every ``check_every`` steps and at the last)
    whose Mean@k reaches it; raise ModelError, writing nothing, when the budget runs out first.
    """
    from rladctl.backends.logprobs import build_row_batch, sequence_logprobs
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.sampling import prepare_prompts
    from rladctl.store.checkpoint import save_checkpoint
    from rladctl.tasks.catalog import build_task

    check_arguments(steps, batch_size, target, check_every, check_prompts)
    torch.manual_seed(seed)
    task = build_task(recipe.task)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype="float32", device="auto", for_training=True)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    started, nll, checks, taken = time.perf_counter(), float("nan"), [], steps
    with meter(f"warm-up {Path(model_dir).name}", total=steps) as bar:
        for step in range(steps):
            prompts = prepare_prompts(
                task,
                recipe.prompt,
                tokenizer,
                "train",
                (seed * 7919 + step * batch_size) % task.split_size("train"),
                batch_size,
            )
            completions = [
                tokenizer(gold_completion(item.answer, recipe.prompt), add_special_tokens=False)["input_ids"] + [eos]
                for item in prompts.items
            ]
            batch = build_row_batch(prompts.token_ids, completions, pad, model.device)
            for group in optimizer.param_groups:  # cosine decay to 10% keeps the end stable
                group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
            loss = -sequence_logprobs(model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            nll = float(loss.detach())
            bar.advance(1, int(batch.targets_N.numel()))
            if target is not None and ((step + 1) % check_every == 0 or step + 1 == steps):
                checks.append({"step": step + 1, **held_out_check(recipe, task, model, tokenizer, check_prompts, seed)})
                log(
                    f"warm-up {Path(model_dir).name}: step {step + 1}, held-out Mean@{recipe.eval.pass_at} {checks[-1]['mean']:.3f}"
                )
                if checks[-1]["mean"] >= target:
                    taken = step + 1
                    break
    seconds = time.perf_counter() - started
    if target is not None and checks[-1]["mean"] < target:
        raise ModelError(
            f"warm-up of {model_dir} reached held-out Mean@{recipe.eval.pass_at} {checks[-1]['mean']:.3f} after "
            f"{steps} steps, short of the target {target:g} (the model directory is unchanged)",
            None,
            "raise the step budget (--steps) or the learning rate (--lr), or lower the target (--target)",
        )
    model.eval()
    manifest = {
        "kind": "warmup",
        "steps": taken,
        "max_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "final_nll": nll,
        "target": target,
        "checks": checks,
        "task": to_plain(recipe.task),
        "prompt": to_plain(recipe.prompt),
        "seconds": round(seconds, 3),
    }
    save_checkpoint(Path(model_dir), model, tokenizer, None, 0, [], manifest)
    return WarmupSummary(str(model_dir), taken, batch_size, seconds, nll, target, checks)


def check_arguments(steps: int, batch_size: int, target: float | None, check_every: int, check_prompts: int) -> None:
    if steps < 1 or batch_size < 1:
        raise ConfigError("warm-up steps and batch size must be >= 1", None, "pass --steps N")
    if target is not None and not 0.0 < target <= 1.0:
        raise ConfigError(f"warm-up target {target} is not a Mean@k in (0, 1]", "in --target", "e.g. --target 0.8")
    if check_every < 1 or check_prompts < 1:
        raise ConfigError("--check-every and --check-prompts must be >= 1", None, "e.g. --check-every 50")
