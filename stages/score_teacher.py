"""`rladctl score-teacher`: the teacher's log-prob of every token the student sampled.

Reads a complete rollouts artifact (never modifying it) and writes a scored artifact: the same rows,
in the same order, plus ``teacher_logprobs`` (and optionally the teacher's top-k per position).
Output part i is input part i plus the teacher columns, so a killed run resumes part by part.
The teacher runs on the backend score_teacher.backend names (rladctl/backends/): hf scores rows in
micro-batches of similar length with chunked log-probs, vllm with prompt_logprobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import backends, distributed
from rladctl.config import LoadedRecipe, ScoreTeacherConfig, check_ranges, to_plain
from rladctl.errors import ArtifactError, ConfigError, ModelError
from rladctl.store import schema as S
from rladctl.store.artifacts import fingerprint, open_artifact, validate_token_columns
from rladctl.store.lock import claim_output
from rladctl.store.parts import open_parts


@dataclass
class ScoreSummary:
    out: str
    rows: int
    completion_tokens: int
    seconds: float
    tokens_per_s: float
    teacher_logprob_mean: float
    student_minus_teacher_mean: float  # mean over tokens of sampler_logprob - teacher_logprob
    skipped: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_tokenizers(artifact, teacher_tok, teacher_vocab: int, sample_rows: int = 64, teacher_path: str = "") -> None:
    """Refuse a teacher whose tokens or prompt rendering differ from the student's."""
    from rladctl.models.tokenizer import check_same_vocab, load_tokenizer

    first = artifact.read_part(0, [S.PROMPT, S.PROMPT_TOKEN_IDS, S.COMPLETION_TOKEN_IDS])
    used: set[int] = set()
    for _, part in artifact.iter_parts([S.PROMPT_TOKEN_IDS, S.COMPLETION_TOKEN_IDS]):
        import pyarrow.compute as pc

        for column in (S.PROMPT_TOKEN_IDS, S.COMPLETION_TOKEN_IDS):
            used.update(pc.unique(pc.list_flatten(part[column])).to_pylist())
    top = max(used, default=-1)
    if top >= teacher_vocab:
        raise ModelError(
            f"the rollouts use token id {top} but the teacher's vocabulary has {teacher_vocab} ids",
            f"in {artifact.path}",
            "score with a teacher that shares the student's tokenizer",
        )
    student_path = artifact.manifest.get("model", {}).get("path")
    if student_path and Path(student_path).exists():
        where = f"between the student {student_path} and the teacher {teacher_path or 'given'}"
        check_same_vocab(load_tokenizer(student_path), teacher_tok, sorted(used), where)
    # Same prompt text must give the same ids under the teacher's tokenizer (each distinct prompt
    # of the first rows once: a group repeats its prompt G times), in one batched call.
    n = min(sample_rows, first.num_rows)
    texts, id_lists = first[S.PROMPT][:n].to_pylist(), first[S.PROMPT_TOKEN_IDS][:n].to_pylist()
    first_row: dict[str, int] = {}
    for i, text in enumerate(texts):
        first_row.setdefault(text, i)
    rows = list(first_row.values())
    encoded = teacher_tok([texts[i] for i in rows], add_special_tokens=False)["input_ids"] if rows else []
    for i, teacher_ids in zip(rows, encoded):
        ids = id_lists[i]
        if teacher_ids not in (ids, ids[1:]):
            raise ModelError(
                f"the teacher tokenizes prompt row {i} differently from the student",
                f"in {artifact.path}",
                "teacher and student must share one tokenizer and chat template",
            )


def run_score_teacher(recipe: LoadedRecipe, overwrite: bool = False) -> ScoreSummary:
    """Under torchrun, output part i is scored by rank i % world_size; rank 0 writes the manifest."""
    cfg = recipe.score_teacher
    with claim_output(cfg.out, {"input": cfg.input, "teacher": cfg.teacher}, distributed.is_main()):
        return score(cfg, overwrite)


def score(cfg: ScoreTeacherConfig, overwrite: bool) -> ScoreSummary:
    from rladctl.models.identity import model_identity

    source = check_request(cfg)
    identity = model_identity(cfg.teacher)
    backend = backends.resolve(cfg.backend, cfg.fallback_to_hf)
    backends.check_ranks(backend.name, False, "score-teacher")
    described = {
        "kind": S.SCORED,
        "input": source.content_id,
        "teacher": {k: identity.get(k) for k in ("config_hash", "weights_hash", "tokenizer_hash")},
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "dtype": cfg.dtype,
        **backend.fingerprint,
    }
    parts = open_parts(cfg.out, S.SCORED, fingerprint(described), overwrite, len(source.manifest["parts"]))
    if parts.complete:
        return summarize(cfg.out, skipped=True)

    def make_part(scorer, index: int, on_tokens):
        """Output part i = input part i plus the teacher's columns."""
        table = source.read_part(index)
        validate_token_columns(table, (S.SAMPLER_LOGPROBS,), str(source.part_paths()[index]))
        prompts, completions = table[S.PROMPT_TOKEN_IDS].to_pylist(), table[S.COMPLETION_TOKEN_IDS].to_pylist()
        teacher, topk = scorer.score(prompts, completions, on_tokens)
        return with_teacher_columns(table, teacher, topk, cfg.top_k)

    run = parts.write("score-teacher", lambda: load_teacher(cfg, backend, source), make_part)
    parts.finalize(
        config=to_plain(cfg),
        inputs=[source.reference()],
        teacher=identity,
        student=source.manifest.get("model"),
        task=source.manifest.get("task"),
        prompt=source.manifest.get("prompt"),
        reward=source.manifest.get("reward"),
        sampling=source.manifest.get("sampling"),
        scoring={"temperature": cfg.temperature, "top_k": cfg.top_k, "dtype": run.info.dtype},
        backend=run.info.entry(),
        timings=run.timings,
    )
    return summarize(cfg.out, skipped=False)


def check_request(cfg: ScoreTeacherConfig):
    """Refuse a request that cannot be scored, before any model loads; returns the rollouts artifact."""
    for key in ("teacher", "input", "out"):
        if not getattr(cfg, key):
            fix = f"pass --{key} or set score_teacher.{key} in the recipe"
            raise ConfigError(f"no {key} given", "for score-teacher", fix)
    check_ranges("score_teacher", cfg, {})  # a caller that built the config by hand skipped the loader's check
    distributed.init()
    source = open_artifact(cfg.input, (S.ROLLOUTS,), role="rollouts")
    if source.rows == 0:
        raise ArtifactError(
            f"rollouts artifact {cfg.input} has no rows",
            None,
            "score an artifact with rows: re-run rladctl rollout with at least one prompt",
        )
    return source


def load_teacher(cfg: ScoreTeacherConfig, backend: backends.Backend, source) -> backends.Scorer:
    """The teacher's scorer on this rank's device, checked against the rollouts."""
    params = backends.ScoringParams(cfg.temperature, cfg.top_k, cfg.micro_batch_tokens, cfg.chunk_tokens)
    scorer = backends.load_scorer(cfg, cfg.teacher, params, backend)
    if cfg.top_k > scorer.vocab_size:
        raise ConfigError(
            f"score_teacher.top_k is {cfg.top_k} but the teacher's vocabulary has {scorer.vocab_size} ids",
            None,
            "lower --top-k",
        )
    check_tokenizers(source, scorer.tokenizer, scorer.vocab_size, teacher_path=cfg.teacher)
    return scorer


def with_teacher_columns(table, teacher, topk, top_k: int):
    import pyarrow as pa

    schema = S.scored_schema(top_k)
    columns = {f.name: table[f.name] for f in S.ROLLOUT_FIELDS}
    columns[S.TEACHER_LOGPROBS] = pa.array(teacher, pa.list_(pa.float32()))
    if top_k:
        columns[S.TEACHER_TOPK_IDS] = pa.array([t[0] for t in topk], pa.list_(pa.list_(pa.int32())))
        columns[S.TEACHER_TOPK_LOGPROBS] = pa.array([t[1] for t in topk], pa.list_(pa.list_(pa.float32())))
    return pa.Table.from_pydict(columns, schema=schema)


def summarize(path: str, skipped: bool) -> ScoreSummary:
    import numpy as np
    import pyarrow.compute as pc

    artifact = open_artifact(path, (S.SCORED,), verify=False)
    table = artifact.table([S.SAMPLER_LOGPROBS, S.TEACHER_LOGPROBS])
    teacher = pc.list_flatten(table[S.TEACHER_LOGPROBS]).to_numpy(zero_copy_only=False)
    sampler = pc.list_flatten(table[S.SAMPLER_LOGPROBS]).to_numpy(zero_copy_only=False)
    seconds = float(artifact.manifest.get("timings", {}).get("seconds", 0.0))
    return ScoreSummary(
        out=str(path),
        rows=table.num_rows,
        completion_tokens=len(teacher),
        seconds=seconds,
        tokens_per_s=len(teacher) / seconds if seconds else 0.0,
        teacher_logprob_mean=float(np.mean(teacher)) if len(teacher) else 0.0,
        student_minus_teacher_mean=float(np.mean(sampler - teacher)) if len(teacher) else 0.0,
        skipped=skipped,
    )
