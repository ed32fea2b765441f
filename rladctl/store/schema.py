"""Every artifact column, declared once (DESIGN §3).

Each constant says who writes it and who reads it. No other module spells a column name as a
string literal: import the constant.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# Artifact kinds (manifest "kind").
ROLLOUTS = "rollouts"
SCORED = "scored"
EVAL = "eval"
CHECKPOINT = "checkpoint"

# --- rollout rows: written by rollout (and eval), read by every later stage -------------------
PROMPT_ID = "prompt_id"  # stable id of the prompt; group key for advantages
SAMPLE_IDX = "sample_idx"  # 0..G-1 within the group
TASK = "task"  # task name, e.g. knights_knaves
TASK_METADATA = "task_metadata"  # JSON of the task's per-item metadata (difficulty, source index)
PROMPT = "prompt"  # rendered prompt text (after the chat template)
PROMPT_TOKEN_IDS = "prompt_token_ids"
COMPLETION = "completion"
COMPLETION_TOKEN_IDS = "completion_token_ids"
SAMPLER_LOGPROBS = "sampler_logprobs"  # log-prob of each sampled token under the sampling policy
FINISH_REASON = "finish_reason"  # "stop" | "length"
REWARD = "reward"  # verifier score in [0, 1]; partial credit allowed
ANSWER = "answer"  # gold answer
EXTRACTED = "extracted"  # answer parsed from the completion ("" when none)
POLICY_STEP = "policy_step"  # training iteration whose weights produced the row

# --- scored rows: written by score-teacher, read by train --------------------------------------
TEACHER_LOGPROBS = "teacher_logprobs"  # teacher log-prob of each sampled completion token
TEACHER_TOPK_IDS = "teacher_topk_ids"  # optional: [T][k] ids of the teacher's top-k tokens
TEACHER_TOPK_LOGPROBS = "teacher_topk_logprobs"  # optional: [T][k] their log-probs

# --- eval rows: written by eval, read by the report --------------------------------------------
CORRECT = "correct"  # reward >= the recorded threshold (Pass@k counts only these)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"

ROLLOUT_FIELDS: list[pa.Field] = [
    pa.field(PROMPT_ID, pa.string(), nullable=False),
    pa.field(SAMPLE_IDX, pa.int32(), nullable=False),
    pa.field(TASK, pa.string(), nullable=False),
    pa.field(TASK_METADATA, pa.string(), nullable=False),
    pa.field(PROMPT, pa.string(), nullable=False),
    pa.field(PROMPT_TOKEN_IDS, pa.list_(pa.int32()), nullable=False),
    pa.field(COMPLETION, pa.string(), nullable=False),
    pa.field(COMPLETION_TOKEN_IDS, pa.list_(pa.int32()), nullable=False),
    pa.field(SAMPLER_LOGPROBS, pa.list_(pa.float32()), nullable=False),
    pa.field(FINISH_REASON, pa.string(), nullable=False),
    pa.field(REWARD, pa.float32(), nullable=False),
    pa.field(ANSWER, pa.string(), nullable=False),
    pa.field(EXTRACTED, pa.string(), nullable=False),
    pa.field(POLICY_STEP, pa.int32(), nullable=False),
]

TEACHER_FIELDS: list[pa.Field] = [pa.field(TEACHER_LOGPROBS, pa.list_(pa.float32()), nullable=False)]
TEACHER_TOPK_FIELDS: list[pa.Field] = [
    pa.field(TEACHER_TOPK_IDS, pa.list_(pa.list_(pa.int32())), nullable=False),
    pa.field(TEACHER_TOPK_LOGPROBS, pa.list_(pa.list_(pa.float32())), nullable=False),
]
EVAL_FIELDS: list[pa.Field] = [pa.field(CORRECT, pa.bool_(), nullable=False)]

# Columns that must have one entry per completion token.
PER_TOKEN_COLUMNS = (SAMPLER_LOGPROBS, TEACHER_LOGPROBS, TEACHER_TOPK_IDS, TEACHER_TOPK_LOGPROBS)


def rollout_schema() -> pa.Schema:
    return pa.schema(ROLLOUT_FIELDS)


def scored_schema(top_k: int = 0) -> pa.Schema:
    return pa.schema(ROLLOUT_FIELDS + TEACHER_FIELDS + (TEACHER_TOPK_FIELDS if top_k else []))


def eval_schema() -> pa.Schema:
    return pa.schema(ROLLOUT_FIELDS + EVAL_FIELDS)


def schema_for(kind: str, top_k: int = 0) -> pa.Schema:
    return {ROLLOUTS: rollout_schema, EVAL: eval_schema}.get(kind, lambda: scored_schema(top_k))()


def required_columns(kind: str) -> list[str]:
    """Columns a reader insists on for an artifact of this kind (optional top-k excluded)."""
    return [f.name for f in schema_for(kind)]
