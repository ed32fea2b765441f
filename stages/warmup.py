"""Supervised warm-up on gold answers: how toy teachers (and students) become competent.

The paper's teachers are strong pretrained models. On a machine without a model hub, rladctl makes
a competent tiny teacher instead by plain supervised training on the task's gold answers: prompt
(rendered exactly as rollout renders it) -> ``gold</answer><eos>`` with the masked NLL of the
completion (the ``sft`` objective). The model directory is replaced atomically at the end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rladctl.config import LoadedRecipe, to_plain
from rladctl.errors import ConfigError
from rladctl.progress import meter


@dataclass
class WarmupSummary:
    model: str
    steps: int
    batch_size: int
    seconds: float
    final_nll: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def gold_completion(answer: str, prompt_cfg) -> str:
    """What a perfect completion looks like after the prompt's answer prefix."""
    if prompt_cfg.answer_prefix.rstrip().endswith("<answer>"):
        return f"{answer}</answer>"
    return f"<answer>{answer}</answer>"


def warmup(
    recipe: LoadedRecipe, model_dir: str | Path, steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0
) -> WarmupSummary:
    """Train ``model_dir`` in place for ``steps`` AdamW steps on gold (prompt, answer) pairs."""
    from rladctl.backends.logprobs import build_row_batch, sequence_logprobs
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.sampling import prepare_prompts
    from rladctl.store.checkpoint import save_checkpoint
    from rladctl.tasks.catalog import build_task

    if steps < 1 or batch_size < 1:
        raise ConfigError("warm-up steps and batch size must be >= 1", None, "pass --steps N")
    torch.manual_seed(seed)
    task = build_task(recipe.task)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype="float32", device="auto", for_training=True)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    started, nll = time.perf_counter(), float("nan")
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
    seconds = time.perf_counter() - started
    model.eval()
    manifest = {
        "kind": "warmup",
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "final_nll": nll,
        "task": to_plain(recipe.task),
        "prompt": to_plain(recipe.prompt),
        "seconds": round(seconds, 3),
    }
    save_checkpoint(Path(model_dir), model, tokenizer, None, 0, [], manifest)
    return WarmupSummary(str(model_dir), steps, batch_size, seconds, nll)
