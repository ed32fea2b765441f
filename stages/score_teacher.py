"""`rladctl score-teacher`: the teacher's log-prob of every token the student sampled.

Reads a complete rollouts artifact (never modifying it) and writes a scored artifact: the same rows,
in the same order, plus ``teacher_logprobs`` (and optionally the teacher's top-k per position).
Output part i is input part i plus the teacher columns, so a killed run resumes part by part.
Rows are scored in micro-batches of similar length (fewer padded tokens); log-probs are chunked so
no [tokens x vocab] float32 tensor exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rladctl import distributed
from rladctl.config import LoadedRecipe, ScoreTeacherConfig, to_plain
from rladctl.errors import ArtifactError, ConfigError, ModelError
from rladctl.progress import log, meter
from rladctl.store import schema as S
from rladctl.store.artifacts import (
    finalize_shared,
    fingerprint,
    open_artifact,
    open_writer,
    validate_token_columns,
)


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
        raise ModelError(f"the rollouts use token id {top} but the teacher's vocabulary has {teacher_vocab} ids", f"in {artifact.path}", "score with a teacher that shares the student's tokenizer")
    student_path = artifact.manifest.get("model", {}).get("path")
    if student_path and Path(student_path).exists():
        where = f"between the student {student_path} and the teacher {teacher_path or 'given'}"
        check_same_vocab(load_tokenizer(student_path), teacher_tok, sorted(used), where)
    # Same prompt text must give the same ids under the teacher's tokenizer.
    for i in range(min(sample_rows, first.num_rows)):
        text, ids = first[S.PROMPT][i].as_py(), first[S.PROMPT_TOKEN_IDS][i].as_py()
        if teacher_tok(text, add_special_tokens=False)["input_ids"] not in (ids, ids[1:]):
            raise ModelError(
                f"the teacher tokenizes prompt row {i} differently from the student", f"in {artifact.path}",
                "teacher and student must share one tokenizer and chat template",
            )


def score_rows(model, prompts: list[list[int]], completions: list[list[int]], cfg: ScoreTeacherConfig, pad_id: int, on_batch=None):
    """Teacher log-probs per row (list of float lists), and top-k ids/log-probs when cfg.top_k."""
    import torch

    from rladctl.backends.logprobs import (
        build_row_batch,
        completion_hidden,
        lm_head_logprobs,
        output_head,
        pass_overhead_tokens,
        split_rows,
        tight_length_buckets,
        topk_logprobs,
    )

    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    out: list[Any] = [None] * len(prompts)
    topk: list[Any] = [None] * len(prompts)
    w_VH = output_head(model)
    with torch.inference_mode():
        for rows in tight_length_buckets(lengths, cfg.micro_batch_tokens, pass_overhead_tokens(cfg.micro_batch_tokens, model.device)):
            batch = build_row_batch([prompts[i] for i in rows], [completions[i] for i in rows], pad_id, model.device)
            h_NH = completion_hidden(model, batch)  # one backbone pass serves log-probs and top-k
            flat = lm_head_logprobs(h_NH, w_VH, batch.targets_N, cfg.temperature, cfg.chunk_tokens)
            for i, values in zip(rows, split_rows(flat.cpu(), batch.lengths_B)):
                out[i] = values.tolist()
            if cfg.top_k:
                ids, lps = topk_logprobs(h_NH, w_VH, cfg.top_k, cfg.temperature, cfg.chunk_tokens)
                for i, a, b in zip(rows, split_rows(ids.cpu(), batch.lengths_B), split_rows(lps.cpu(), batch.lengths_B)):
                    topk[i] = (a.tolist(), b.tolist())
            if on_batch:
                on_batch(sum(batch.lengths_B))
    return out, topk


def run_score_teacher(recipe: LoadedRecipe, overwrite: bool = False) -> ScoreSummary:
    """Under torchrun, output part i is scored by rank i % world_size; rank 0 writes the manifest."""
    from rladctl.stages.rollout import check_backend_ranks

    from rladctl.backends.vllm import resolve_backend, teacher_backend_info
    from rladctl.models.identity import model_identity

    cfg = recipe.score_teacher
    for key in ("teacher", "input", "out"):
        if not getattr(cfg, key):
            raise ConfigError(f"no {key} given", "for score-teacher", f"pass --{key} or set score_teacher.{key} in the recipe")
    if cfg.temperature <= 0 or cfg.top_k < 0 or cfg.micro_batch_tokens < 1 or cfg.chunk_tokens < 1:
        raise ConfigError("score_teacher.temperature must be > 0 and top_k, micro_batch_tokens, chunk_tokens >= 0/1", None, "fix the recipe")
    distributed.init()
    source = open_artifact(cfg.input, (S.ROLLOUTS,), role="rollouts")
    if source.rows == 0:
        raise ArtifactError(f"rollouts artifact {cfg.input} has no rows", None, "score an artifact with rows: re-run rladctl rollout with at least one prompt")
    if Path(cfg.out).resolve() == Path(cfg.input).resolve():
        raise ConfigError("score-teacher output is its input", f"{cfg.out}", "write the scored artifact to a new directory")
    identity = model_identity(cfg.teacher)
    backend = resolve_backend(cfg.backend, cfg.fallback_to_hf)
    check_backend_ranks(backend, False, "score-teacher")
    described = {
        "kind": S.SCORED, "input": source.content_id, "teacher": {k: identity.get(k) for k in ("config_hash", "weights_hash", "tokenizer_hash")},
        "temperature": cfg.temperature, "top_k": cfg.top_k, "dtype": cfg.dtype,
        **({"backend": backend} if backend != "hf" else {}),  # hf artifacts keep their fingerprint
    }
    writer = open_writer(Path(cfg.out), S.SCORED, fingerprint(described), overwrite)
    if writer.complete:
        log(f"[green]{cfg.out} is already complete for these inputs; nothing to do")
        return summarize(cfg.out, skipped=True)
    num_parts = len(source.manifest["parts"])
    missing = [i for i in range(num_parts) if i not in writer.done and distributed.owns(i)]
    # A rank with nothing to score loads no model; rank 0 loads it when only the manifest is missing.
    info, tokens, seconds = None, 0, 0.0
    if missing or (distributed.is_main() and len(writer.done) >= num_parts):
        model, tokenizer = load_teacher(cfg, backend, source)
        started = time.perf_counter()
        tokens = score_parts(model, tokenizer, source, writer, missing, cfg, backend)
        seconds = time.perf_counter() - started
        info = teacher_backend_info(model) if backend == "vllm" else (str(model.dtype), {"name": "hf", "version": _transformers_version()})
    tokens, parts_written = (int(x) for x in distributed.all_reduce_floats([tokens, len(missing)]))
    seconds = distributed.all_reduce_float(seconds, "max")
    dtype, backend_info = next(i for i in distributed.all_gather_objects(info) if i)
    finalize_shared(
        writer, num_parts,
        config=to_plain(cfg), inputs=[source.reference()], teacher=identity,
        student=source.manifest.get("model"), task=source.manifest.get("task"), prompt=source.manifest.get("prompt"),
        reward=source.manifest.get("reward"), sampling=source.manifest.get("sampling"),
        scoring={"temperature": cfg.temperature, "top_k": cfg.top_k, "dtype": dtype},
        backend=backend_info,
        timings={"seconds": round(seconds, 3), "completion_tokens": tokens, "parts_written": parts_written, "ranks": distributed.world_size()},
    )
    return summarize(cfg.out, skipped=False)


def load_teacher(cfg: ScoreTeacherConfig, backend: str, source):
    """The teacher (an HF model on this rank's device, or a vLLM engine) and its tokenizer, checked against the rollouts."""
    from rladctl.backends.vllm import load_teacher_llm, teacher_vocab_size
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.teacher, trust_remote_code=cfg.trust_remote_code)
    if backend == "vllm":
        model = load_teacher_llm(cfg)
        vocab = teacher_vocab_size(model)
    else:
        model = load_model(cfg.teacher, dtype=cfg.dtype, device=distributed.device(cfg.device), trust_remote_code=cfg.trust_remote_code)
        vocab = model.get_output_embeddings().weight.shape[0]
    if cfg.top_k > vocab:
        raise ConfigError(f"score_teacher.top_k is {cfg.top_k} but the teacher's vocabulary has {vocab} ids", None, "lower --top-k")
    check_tokenizers(source, tokenizer, vocab, teacher_path=cfg.teacher)
    return model, tokenizer


def score_parts(model, tokenizer, source, writer, parts: list[int], cfg: ScoreTeacherConfig, backend: str) -> int:
    """Score and write each of ``parts`` (output part i = input part i + teacher columns); returns tokens scored."""
    from rladctl.backends.vllm import vllm_teacher_logprobs

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = 0
    with meter(f"score-teacher {Path(cfg.out).name}", total=len(parts)) as bar:
        for index in parts:
            table = source.read_part(index)
            validate_token_columns(table, (S.SAMPLER_LOGPROBS,), str(source.part_paths()[index]))
            prompts, completions = table[S.PROMPT_TOKEN_IDS].to_pylist(), table[S.COMPLETION_TOKEN_IDS].to_pylist()
            if backend == "vllm":
                teacher, topk = vllm_teacher_logprobs(model, prompts, completions, cfg.temperature, cfg.top_k)
            else:
                teacher, topk = score_rows(model, prompts, completions, cfg, pad_id, on_batch=lambda n: bar.advance(0, n))
            writer.write_part(index, with_teacher_columns(table, teacher, topk, cfg.top_k))
            tokens += sum(len(t) for t in teacher)
            bar.advance(1)
    return tokens


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
        out=str(path), rows=table.num_rows, completion_tokens=len(teacher), seconds=seconds,
        tokens_per_s=len(teacher) / seconds if seconds else 0.0,
        teacher_logprob_mean=float(np.mean(teacher)) if len(teacher) else 0.0,
        student_minus_teacher_mean=float(np.mean(sampler - teacher)) if len(teacher) else 0.0, skipped=skipped,
    )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
