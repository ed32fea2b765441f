"""The ``hf`` backend: transformers models on any torch device (DESIGN §5; the CPU default).

``HFGenerator`` is a batched, left-padded, KV-cached sampling loop: token-id prompts (already
repeated G times by the caller) in, one ``Sample`` per prompt out. The recorded log-prob is that of
the distribution actually sampled: temperature-scaled logits, renormalised over the top-p nucleus
when ``top_p < 1``.

``HFScorer`` gives the teacher's log-prob of every completion token: rows go through the model in
micro-batches of similar length (fewer padded tokens) and log-probs are chunked, so no
[tokens x vocab] float32 tensor exists.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from rladctl.backends.base import (
    Backend,
    BackendInfo,
    Sample,
    SamplingParams,
    ScoringParams,
    TopK,
    eos_token_ids,
)


def sampling_logprobs(logits_BV: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Log-probs of the sampling distribution, float32 [B, V] (-inf outside the nucleus)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling")
    logp = torch.log_softmax(logits_BV.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return logp
    sorted_logp, order = logp.sort(dim=-1, descending=True)
    cum = sorted_logp.exp().cumsum(-1)
    drop_sorted = (cum - sorted_logp.exp()) >= top_p  # keep the smallest prefix reaching top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    logp = logp.masked_fill(drop, -float("inf"))
    return logp - torch.logsumexp(logp, dim=-1, keepdim=True)


class HFGenerator:
    """Batched sampling with a KV cache over any transformers causal LM."""

    name = "hf"

    def __init__(self, model, tokenizer, eos_ids: list[int], batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = sorted(set(eos_ids))
        self.batch_size = batch_size
        self.version = _transformers_version()
        self.info = BackendInfo(self.name, self.version, str(model.dtype))
        self.context_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        # transformers 5.2x renamed past_key_values to cache; older releases (vLLM's pin) know only the first.
        self.cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @classmethod
    def load(cls, engine, model: str, *, batch_size: int, seed: int = 0) -> HFGenerator:
        """``model`` on ``engine.device`` (an EngineConfig); the seed goes with each call's SamplingParams."""
        tokenizer, lm = _load(engine, model)
        return cls(lm, tokenizer, eos_token_ids(lm, tokenizer), batch_size=batch_size)

    def close(self) -> None:
        """Nothing to stop: the model is an ordinary module (``rladctl run`` may keep it for the next stage)."""

    def generate(self, prompts: list[list[int]], params: SamplingParams, on_batch=None) -> list[Sample]:
        gen = torch.Generator(device="cpu").manual_seed(params.seed)
        out: list[Sample] = []
        for b0 in range(0, len(prompts), self.batch_size):
            batch = prompts[b0 : b0 + self.batch_size]
            samples = self._generate_batch(batch, params, gen)
            out.extend(samples)
            if on_batch is not None:
                on_batch(samples)
        return out

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, gen: torch.Generator) -> list[Sample]:
        """Sample every row to EOS or ``max_new_tokens``; rows that stop leave the batch.

        Each step draws one uniform per row of the whole batch on the CPU generator, and row b
        always uses draw b: a row's tokens depend on the seed and its place in the batch, never on
        the device or on when other rows stop. Once rows have stopped, the rest run on without them
        (their KV cache rows dropped), so a long-tailed batch costs what its live rows cost.
        Dropping rows copies the whole cache: on a GPU, where a decode step is bound by memory
        traffic rather than by the rows' arithmetic, only once an eighth of the batch has stopped;
        on a CPU, where each live row costs its share of every matmul, at every stop.
        """
        from transformers import DynamicCache

        device = self.model.device
        B, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, width), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding keeps every row's next token in the last column
            input_ids[b, width - len(p) :] = torch.tensor(p)
            mask[b, width - len(p) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        eos = torch.tensor(self.eos_ids, device=device)
        cache = DynamicCache()
        compact = hasattr(cache, "batch_select_indices")
        tokens_BT = torch.full((B, params.max_new_tokens), self.pad_id, dtype=torch.long)
        logps_BT = torch.zeros((B, params.max_new_tokens), dtype=torch.float32)
        live = torch.arange(B)  # rows of the batch still sampling, in cache order
        done = torch.zeros(B, dtype=torch.bool, device=device)  # stopped, still in the cache
        step_ids = input_ids
        for t in range(params.max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            logits = self.model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self.cache_kwarg: cache},
            ).logits[:, -1]
            logp_AV = sampling_logprobs(logits, params.temperature, params.top_p)
            uniform_B = torch.rand(B, generator=gen, dtype=torch.float64)
            next_A = sample_inverse_cdf(logp_AV, uniform_B[live].to(device))
            next_A = torch.where(done, torch.full_like(next_A, self.pad_id), next_A)
            tokens_BT[live, t] = next_A.cpu()
            logps_BT[live, t] = logp_AV.gather(-1, next_A[:, None]).squeeze(-1).float().cpu()
            done |= torch.isin(next_A, eos)
            stopped = int(done.sum())
            if stopped == len(live):
                break
            step_ids = next_A[:, None]
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=1)
            if compact and stopped and (stopped * 8 >= len(live) or device.type == "cpu"):
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                live, mask, step_ids, done = live[keep.cpu()], mask[keep], step_ids[keep], done[keep]
        return self._collect(tokens_BT, logps_BT)

    def _collect(self, tokens_BT: torch.Tensor, logps_BT: torch.Tensor) -> list[Sample]:
        from rladctl.store.schema import FINISH_LENGTH, FINISH_STOP

        samples = []
        for toks, lps in zip(tokens_BT.tolist(), logps_BT.tolist()):
            stop = next((t for t, tok in enumerate(toks) if tok in self.eos_ids), None)
            end = len(toks) if stop is None else stop + 1  # the EOS token is part of the completion
            samples.append(Sample(toks[:end], lps[:end], FINISH_LENGTH if stop is None else FINISH_STOP))
        return samples


def sample_inverse_cdf(logp_BV: torch.Tensor, uniform_B: torch.Tensor) -> torch.Tensor:
    """One token per row from exp(logp): the first id whose cumulative probability exceeds u x total.

    Ids of probability 0 (outside the top-p nucleus) are never drawn: the search lands on a rise
    of the cumulative sum, and rounding past the end falls back to the row's last possible id.
    """
    probs = logp_BV.float().exp()
    cdf = probs.double().cumsum(-1)
    x = (uniform_B.double() * cdf[:, -1])[:, None]
    ids = torch.searchsorted(cdf, x, right=True).squeeze(-1)
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1)
    return torch.minimum(ids, last)


# --------------------------------------------------------------------------------------------
# teacher scoring


class HFScorer:
    """Teacher log-probs from a transformers causal LM (``score_rows``)."""

    name = "hf"

    def __init__(self, model, tokenizer, params: ScoringParams):
        self.model, self.tokenizer, self.params = model, tokenizer, params
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.info = BackendInfo(self.name, _transformers_version(), str(model.dtype))

    @classmethod
    def load(cls, engine, model: str, params: ScoringParams) -> HFScorer:
        tokenizer, lm = _load(engine, model)
        return cls(lm, tokenizer, params)

    def score(self, prompts: list[list[int]], completions: list[list[int]], on_tokens=None):
        return score_rows(self.model, prompts, completions, self.params, self.pad_id, on_batch=on_tokens)

    def close(self) -> None:
        """Nothing to stop (``rladctl run`` may keep the teacher for the next iteration)."""


def score_rows(
    model,
    prompts: list[list[int]],
    completions: list[list[int]],
    params: ScoringParams,
    pad_id: int,
    on_batch=None,
):
    """Teacher log-probs per row B (T floats each), and top-k ids/log-probs per row when params.top_k.

    ``params`` needs temperature, top_k, micro_batch_tokens and chunk_tokens (a ScoreTeacherConfig
    serves). ``on_batch(n)`` hears the completion tokens of each micro-batch as it is scored.
    """
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
    topk: list[TopK] = [None] * len(prompts)
    w_VH = output_head(model)
    overhead = pass_overhead_tokens(params.micro_batch_tokens, model.device)
    with torch.inference_mode():
        for rows in tight_length_buckets(lengths, params.micro_batch_tokens, overhead):
            batch = build_row_batch([prompts[i] for i in rows], [completions[i] for i in rows], pad_id, model.device)
            h_NH = completion_hidden(model, batch)  # one backbone pass serves log-probs and top-k
            flat = lm_head_logprobs(h_NH, w_VH, batch.targets_N, params.temperature, params.chunk_tokens)
            for i, values in zip(rows, split_rows(flat.cpu(), batch.lengths_B)):
                out[i] = values.tolist()
            if params.top_k:
                ids, lps = topk_logprobs(h_NH, w_VH, params.top_k, params.temperature, params.chunk_tokens)
                lengths_B = batch.lengths_B
                for i, a, b in zip(rows, split_rows(ids.cpu(), lengths_B), split_rows(lps.cpu(), lengths_B)):
                    topk[i] = (a.tolist(), b.tolist())
            if on_batch:
                on_batch(sum(batch.lengths_B))
    return out, topk


def _load(engine, model: str):
    """(tokenizer, model) for ``model`` as ``engine`` (an EngineConfig) asks: dtype, device, remote code."""
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model, trust_remote_code=engine.trust_remote_code)
    lm = load_model(model, dtype=engine.dtype, device=engine.device, trust_remote_code=engine.trust_remote_code)
    return tokenizer, lm


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


BACKEND = Backend(name="hf", load_generator=HFGenerator.load, load_scorer=HFScorer.load)
