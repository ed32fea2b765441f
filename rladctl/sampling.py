"""Sampling G completions per prompt into an artifact: the path rollout and eval share.

Resolve the prompts, fingerprint everything that decides the output, keep the parts a killed run
already finished, generate and verify the missing ones, write the manifest. Part i holds prompts
[i*P_part, (i+1)*P_part) and is sampled with a seed derived from (seed, i), so a resumed run writes
exactly the bytes an uninterrupted one would have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from rladctl import backends, distributed
from rladctl.config import ENGINE_SPEED_KEYS, LoadedRecipe, PromptConfig, RolloutConfig, to_plain
from rladctl.errors import ConfigError
from rladctl.progress import log
from rladctl.store import schema as S
from rladctl.store.artifacts import fingerprint
from rladctl.store.parts import open_parts


@dataclass
class PreparedPrompts:
    items: list  # TaskItem, P of them
    texts: list[str]  # [P] rendered prompts
    token_ids: list[list[int]]  # [P] ids of each rendered prompt

    def part(self, index: int, size: int) -> PreparedPrompts:
        """Prompts [index*size, (index+1)*size): what part ``index`` samples."""
        sl = slice(index * size, (index + 1) * size)
        return PreparedPrompts(self.items[sl], self.texts[sl], self.token_ids[sl])


def prepare_prompts(
    task,
    prompt_cfg: PromptConfig,
    tokenizer,
    split: str,
    offset: int,
    count: int,
    key: str = "rollout.num_prompts",
) -> PreparedPrompts:
    """``key`` names the recipe key ``count`` came from, for the error when it is < 1."""
    from rladctl.tasks.catalog import render_prompt

    if count < 1:
        raise ConfigError(
            f"no prompts to sample (the number of prompts is {count})",
            f"in {key}",
            f"set {key.split(' ')[0]} >= 1",
        )
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
                f"prompt {item.prompt_id} has {len(ids)} tokens; with max_new_tokens {max_new_tokens} it exceeds "
                f"the context of {context} tokens",
                f"of model {model_path}",
                "lower max_new_tokens, shorten the prompt template, or use a model with a longer context",
            )


def sample_rows(
    task,
    prompt_cfg,
    prompts: PreparedPrompts,
    generator,
    params,
    group_size: int,
    policy_step: int,
) -> dict[str, list]:
    """Generate G samples for each of the P prompts, verify them; rollout columns of B = P*G rows."""
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
            S.PROMPT_ID: item.prompt_id,
            S.SAMPLE_IDX: g,
            S.TASK: task.name,
            S.TASK_METADATA: json.dumps(item.metadata, sort_keys=True),
            S.PROMPT: prompts.texts[j // group_size],
            S.PROMPT_TOKEN_IDS: prompts.token_ids[j // group_size],
            S.COMPLETION: completion,
            S.COMPLETION_TOKEN_IDS: sample.token_ids,
            S.SAMPLER_LOGPROBS: sample.logprobs,
            S.FINISH_REASON: sample.finish_reason,
            S.REWARD: float(reward),
            S.ANSWER: item.answer,
            S.EXTRACTED: extracted,
            S.POLICY_STEP: policy_step,
        }
        for key, value in row.items():
            cols[key].append(value)
    return cols


def part_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7_919 + 17) % (2**63 - 1)


def generate_artifact(
    recipe: LoadedRecipe,
    cfg: RolloutConfig,
    kind: str,
    overwrite: bool,
    extra_columns: Callable[[dict[str, list]], dict[str, list]] | None = None,
    extra_manifest: dict | None = None,
) -> bool:
    """Sample, verify, write parts, write the manifest; True when ``cfg.out`` was already complete.

    ``extra_columns(cols)`` adds columns computed from a part's rollout columns (eval's ``correct``);
    ``extra_manifest`` adds manifest fields, which also enter the fingerprint.
    """
    from rladctl.models.identity import model_identity
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.tasks.catalog import build_task

    stage = "rollout" if kind == S.ROLLOUTS else "eval"
    require(cfg.model, "model", kind)
    require(cfg.out, "out", kind)
    distributed.init()
    backends.check_ranks(cfg.backend, cfg.fallback_to_hf, stage)
    if cfg.group_size < 1 or cfg.prompts_per_part < 1 or cfg.max_new_tokens < 1:
        raise ConfigError(
            "group_size, prompts_per_part and max_new_tokens must be >= 1",
            f"in [{stage}]",
            "fix the recipe",
        )
    task = build_task(recipe.task)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    # eval fills num_prompts from eval.num_prompts, or task.eval_size when that is 0
    key = "rollout.num_prompts" if kind == S.ROLLOUTS else "eval.num_prompts (default task.eval_size)"
    prompts = prepare_prompts(task, recipe.prompt, tokenizer, cfg.split, cfg.prompt_offset, cfg.num_prompts, key)
    identity = model_identity(cfg.model)
    described = describe(recipe, cfg, kind, identity, task.reward_version, extra_manifest or {})
    num_parts = -(-len(prompts.items) // cfg.prompts_per_part)
    parts = open_parts(cfg.out, kind, fingerprint(described), overwrite, num_parts)
    if parts.complete:
        return True
    if parts.kept:
        log(f"resuming {cfg.out}: {parts.kept} of {num_parts} parts already written")

    def load():
        generator = backends.load_generator(cfg, cfg.model, batch_size=cfg.batch_size, seed=cfg.seed)
        check_context(prompts, cfg.max_new_tokens, generator.context_length, cfg.model)
        return generator

    def make_part(generator, index: int, on_tokens):
        params = backends.SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, part_seed(cfg.seed, index))
        part_prompts = prompts.part(index, cfg.prompts_per_part)
        cols = sample_rows(task, recipe.prompt, part_prompts, generator, params, cfg.group_size, cfg.policy_step)
        if extra_columns is not None:
            cols.update(extra_columns(cols))
        return to_table(cols, kind)

    run = parts.write(kind, load, make_part)
    parts.finalize(
        config=to_plain(cfg),
        task=to_plain(recipe.task),
        prompt=to_plain(recipe.prompt),
        model=identity,
        sampling={k: getattr(cfg, k) for k in ("temperature", "top_p", "max_new_tokens", "seed", "group_size")},
        backend=run.info.entry(),
        reward={"function": task.name, "version": task.reward_version},
        inputs=[],
        timings=run.timings,
        **(extra_manifest or {}),
    )
    return False


def describe(
    recipe: LoadedRecipe,
    cfg: RolloutConfig,
    kind: str,
    identity: dict,
    reward_version: str,
    extra: dict,
) -> dict:
    """Everything that decides a sampled artifact's rows: its fingerprint is the hash of this."""
    # Paths are provenance (kept in the manifest); the model enters the fingerprint by its hashes.
    stage_cfg = {k: v for k, v in to_plain(cfg).items() if k not in ("out", "device", "model", *ENGINE_SPEED_KEYS)}
    return {
        "kind": kind,
        "stage": stage_cfg,
        "task": to_plain(recipe.task),
        "prompt": to_plain(recipe.prompt),
        "model": {k: identity.get(k) for k in ("config_hash", "weights_hash", "tokenizer_hash")},
        "reward_version": reward_version,
        **extra,
    }


def require(value: str, key: str, stage: str) -> None:
    if not value:
        table = "rollout" if stage == S.ROLLOUTS else stage
        raise ConfigError(f"no {key} given", f"for {stage}", f"pass --{key} or set {table}.{key} in the recipe")


def to_table(cols: dict[str, list], kind: str):
    import pyarrow as pa

    schema = S.schema_for(kind)
    return pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)
