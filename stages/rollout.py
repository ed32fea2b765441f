"""`rladctl rollout`: the student samples G completions per prompt -> a rollouts artifact.

Reads top to bottom: resolve the prompts, fingerprint everything that decides the output, keep the
parts a killed run already finished, generate and verify the missing ones, write the manifest.
Part i holds prompts [i*P_part, (i+1)*P_part) and is sampled with a seed derived from (seed, i), so
a resumed run writes exactly the bytes an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import distributed
from rladctl.config import LoadedRecipe, PromptConfig, RolloutConfig, to_plain
from rladctl.errors import ConfigError
from rladctl.progress import log, meter
from rladctl.store import schema as S
from rladctl.store.artifacts import finalize_shared, fingerprint, open_writer


@dataclass
class RolloutSummary:
    out: str
    rows: int
    prompts: int
    completion_tokens: int
    seconds: float
    tokens_per_s: float
    reward_mean: float
    solved_frac: float  # rows with reward 1.0
    truncated_frac: float  # rows that hit max_new_tokens
    skipped: bool  # the complete artifact already existed

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PreparedPrompts:
    items: list  # TaskItem
    texts: list[str]
    token_ids: list[list[int]]


def prepare_prompts(task, prompt_cfg: PromptConfig, tokenizer, split: str, offset: int, count: int, key: str = "rollout.num_prompts") -> PreparedPrompts:
    """``key`` names the recipe key ``count`` came from, for the error when it is < 1."""
    from rladctl.tasks.catalog import render_prompt

    if count < 1:
        raise ConfigError(f"no prompts to sample (the number of prompts is {count})", f"in {key}", f"set {key.split(' ')[0]} >= 1")
    items = task.items(split, offset, count)
    texts = [render_prompt(item, prompt_cfg, tokenizer) for item in items]
    add_special = not (prompt_cfg.chat_template != "never" and getattr(tokenizer, "chat_template", None))
    ids = [tokenizer(text, add_special_tokens=add_special)["input_ids"] for text in texts]
    return PreparedPrompts(items, texts, ids)


def check_context(prompts: PreparedPrompts, max_new_tokens: int, context: int | None, model_path: str) -> None:
    if not context:
        return
    for item, ids in zip(prompts.items, prompts.token_ids):
        if len(ids) + max_new_tokens > context:
            raise ConfigError(
                f"prompt {item.prompt_id} has {len(ids)} tokens; with max_new_tokens {max_new_tokens} it exceeds the context of {context} tokens",
                f"of model {model_path}",
                "lower max_new_tokens, shorten the prompt template, or use a model with a longer context",
            )


def model_context(model_or_config) -> int | None:
    cfg = getattr(model_or_config, "config", model_or_config)
    return getattr(cfg, "max_position_embeddings", None)


def sample_rows(task, prompt_cfg, prompts: PreparedPrompts, generator, params, group_size: int, policy_step: int) -> dict[str, list]:
    """Generate G samples for each prompt, verify them, and return rollout columns."""
    from rladctl.tasks.catalog import extract_answer

    flat = [ids for ids in prompts.token_ids for _ in range(group_size)]
    samples = generator.generate(flat, params)
    cols: dict[str, list] = {f.name: [] for f in S.ROLLOUT_FIELDS}
    tok = generator.tokenizer
    for j, sample in enumerate(samples):
        item, g = prompts.items[j // group_size], j % group_size
        completion = tok.decode(sample.token_ids, skip_special_tokens=True)
        extracted = extract_answer(completion, prompt_cfg)
        reward = task.score(item.metadata, extracted) if extracted else 0.0
        row = {
            S.PROMPT_ID: item.prompt_id, S.SAMPLE_IDX: g, S.TASK: task.name,
            S.TASK_METADATA: json.dumps(item.metadata, sort_keys=True),
            S.PROMPT: prompts.texts[j // group_size], S.PROMPT_TOKEN_IDS: prompts.token_ids[j // group_size],
            S.COMPLETION: completion, S.COMPLETION_TOKEN_IDS: sample.token_ids,
            S.SAMPLER_LOGPROBS: sample.logprobs, S.FINISH_REASON: sample.finish_reason,
            S.REWARD: float(reward), S.ANSWER: item.answer, S.EXTRACTED: extracted, S.POLICY_STEP: policy_step,
        }
        for key, value in row.items():
            cols[key].append(value)
    return cols


# vLLM engine settings that change how fast rows are made, never which rows: not fingerprinted.
ENGINE_ONLY = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "enforce_eager", "fallback_to_hf")


def part_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7_919 + 17) % (2**63 - 1)


def load_generator(cfg, backend: str, group_size: int):
    """The generation backend plus the objects the stage needs from it (tokenizer, context)."""
    from rladctl.backends.hf import HFGenerator, eos_token_ids
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer

    if backend == "vllm":
        from rladctl.backends.vllm import VLLMGenerator, resolve_backend

        if resolve_backend(backend, cfg.fallback_to_hf) == "vllm":
            return VLLMGenerator.from_config(cfg)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    model = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    return HFGenerator(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=cfg.batch_size)


def generate_artifact(recipe: LoadedRecipe, cfg: RolloutConfig, kind: str, overwrite: bool, extra_columns=None, extra_manifest=None) -> RolloutSummary:
    """Shared by rollout and eval: sample, verify, write parts, write the manifest.

    Under torchrun, part i is sampled by rank i % world_size; rank 0 writes the manifest once every
    part exists. A part's rows depend only on its index (its prompts and seed), so any number of
    ranks writes the same bytes as one process.
    """
    from rladctl.backends.hf import SamplingParams
    from rladctl.models.identity import model_identity
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.tasks.catalog import build_task

    require(cfg.model, "model", kind)
    require(cfg.out, "out", kind)
    distributed.init()
    check_backend_ranks(cfg.backend, cfg.fallback_to_hf, "rollout" if kind == S.ROLLOUTS else "eval")
    if cfg.group_size < 1 or cfg.prompts_per_part < 1 or cfg.max_new_tokens < 1:
        raise ConfigError("group_size, prompts_per_part and max_new_tokens must be >= 1", f"in [{'rollout' if kind == S.ROLLOUTS else 'eval'}]", "fix the recipe")
    task = build_task(recipe.task)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    # eval fills num_prompts from eval.num_prompts, or task.eval_size when that is 0
    key = "rollout.num_prompts" if kind == S.ROLLOUTS else "eval.num_prompts (default task.eval_size)"
    prompts = prepare_prompts(task, recipe.prompt, tokenizer, cfg.split, cfg.prompt_offset, cfg.num_prompts, key)
    identity = model_identity(cfg.model)
    # Paths are provenance (kept in the manifest); the model enters the fingerprint by its hashes.
    stage_cfg = {k: v for k, v in to_plain(cfg).items() if k not in ("out", "device", "model", *ENGINE_ONLY)}
    described = {
        "kind": kind, "stage": stage_cfg, "task": to_plain(recipe.task), "prompt": to_plain(recipe.prompt),
        "model": {k: identity.get(k) for k in ("config_hash", "weights_hash", "tokenizer_hash")},
        "reward_version": task.reward_version, **(extra_manifest or {}),
    }
    writer = open_writer(Path(cfg.out), kind, fingerprint(described), overwrite)
    num_parts = -(-len(prompts.items) // cfg.prompts_per_part)
    if writer.complete:
        log(f"[green]{cfg.out} is already complete for these inputs; nothing to do")
        return summarize_existing(cfg.out, skipped=True)
    missing = [i for i in range(num_parts) if i not in writer.done and distributed.owns(i)]
    if writer.done:
        log(f"resuming {cfg.out}: {len(writer.done)} of {num_parts} parts already written")
    tokens, generator = 0, None
    # A rank with nothing to sample loads no model; the manifest still names the backend, so
    # rank 0 loads it when a killed run left every part but no manifest.
    if missing or (distributed.is_main() and len(writer.done) >= num_parts):
        generator = load_generator(dataclasses.replace(cfg, device=distributed.device(cfg.device)), cfg.backend, cfg.group_size)
        check_context(prompts, cfg.max_new_tokens, model_context(getattr(generator, "model", None) or generator), cfg.model)
    try:
        started = time.perf_counter()
        with meter(f"{kind} {Path(cfg.out).name}", total=len(missing)) as bar:
            for index in missing:
                sl = slice(index * cfg.prompts_per_part, (index + 1) * cfg.prompts_per_part)
                part_prompts = PreparedPrompts(prompts.items[sl], prompts.texts[sl], prompts.token_ids[sl])
                params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, part_seed(cfg.seed, index))
                cols = sample_rows(task, recipe.prompt, part_prompts, generator, params, cfg.group_size, cfg.policy_step)
                if extra_columns is not None:
                    cols.update(extra_columns(cols))
                writer.write_part(index, to_table(cols, kind))
                part_tokens = sum(len(t) for t in cols[S.COMPLETION_TOKEN_IDS])
                tokens += part_tokens
                bar.advance(1, part_tokens)
    finally:
        if generator is not None and hasattr(generator, "close"):
            generator.close()  # a vLLM engine holds memory and worker processes
    seconds = time.perf_counter() - started
    tokens, parts_written = (int(x) for x in distributed.all_reduce_floats([tokens, len(missing)]))
    seconds = distributed.all_reduce_float(seconds, "max")
    name, version = next(g for g in distributed.all_gather_objects((generator.name, generator.version) if generator else None) if g)
    finalize_shared(
        writer, num_parts,
        config=to_plain(cfg), task=to_plain(recipe.task), prompt=to_plain(recipe.prompt), model=identity,
        sampling={k: getattr(cfg, k) for k in ("temperature", "top_p", "max_new_tokens", "seed", "group_size")},
        backend={"name": name, "version": version},
        reward={"function": task.name, "version": task.reward_version},
        inputs=[], timings={"seconds": round(seconds, 3), "completion_tokens": tokens, "parts_written": parts_written, "ranks": distributed.world_size()},
        **(extra_manifest or {}),
    )
    return summarize_existing(cfg.out, skipped=False)


def check_backend_ranks(backend: str, fallback_to_hf: bool, stage: str) -> None:
    """vLLM spreads one engine over GPUs itself (tensor_parallel_size): it runs as one process."""
    if backend != "vllm" or not distributed.enabled():
        return
    from rladctl.backends.vllm import resolve_backend

    if resolve_backend(backend, fallback_to_hf) == "vllm":
        raise ConfigError(
            f"{stage} with backend 'vllm' was started on {distributed.world_size()} ranks", "under torchrun",
            f"run it as one process (plain `rladctl {stage}`) and set tensor_parallel_size to use several GPUs; see docs/distributed.md",
        )


def require(value: str, key: str, stage: str) -> None:
    if not value:
        table = "rollout" if stage == S.ROLLOUTS else stage
        raise ConfigError(f"no {key} given", f"for {stage}", f"pass --{key} or set {table}.{key} in the recipe")


def to_table(cols: dict[str, list], kind: str):
    import pyarrow as pa

    schema = S.schema_for(kind)
    return pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)


def summarize_existing(path: str, skipped: bool) -> RolloutSummary:
    import pyarrow.compute as pc

    from rladctl.store.artifacts import open_artifact

    artifact = open_artifact(path, (S.ROLLOUTS, S.EVAL), verify=False)
    table = artifact.table([S.PROMPT_ID, S.REWARD, S.FINISH_REASON, S.COMPLETION_TOKEN_IDS])
    rewards = table[S.REWARD].to_numpy()
    tokens = int(pc.sum(pc.list_value_length(table[S.COMPLETION_TOKEN_IDS])).as_py() or 0)
    seconds = float(artifact.manifest.get("timings", {}).get("seconds", 0.0))
    return RolloutSummary(
        out=str(path), rows=table.num_rows, prompts=len(set(table[S.PROMPT_ID].to_pylist())),
        completion_tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds if seconds else 0.0,
        reward_mean=float(rewards.mean()) if len(rewards) else 0.0,
        solved_frac=float((rewards >= 1.0).mean()) if len(rewards) else 0.0,
        truncated_frac=float(pc.mean(pc.equal(table[S.FINISH_REASON], S.FINISH_LENGTH)).as_py() or 0.0),
        skipped=skipped,
    )


def run_rollout(recipe: LoadedRecipe, overwrite: bool = False) -> RolloutSummary:
    return generate_artifact(recipe, recipe.rollout, S.ROLLOUTS, overwrite)
