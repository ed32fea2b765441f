"""Generation backends behind one small interface (DESIGN §5).

``Generator.generate(prompts, params)`` takes token-id prompts (already repeated G times by the
caller) and returns one ``Sample`` per prompt: completion ids, the sampler's log-prob of every
sampled token, and the finish reason. ``hf`` is a batched, left-padded, KV-cached sampling loop
over a transformers model; ``vllm`` wraps ``vllm.LLM``.

The recorded log-prob is that of the distribution actually sampled: temperature-scaled logits,
renormalised over the top-p nucleus when ``top_p < 1``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # schema.FINISH_STOP | schema.FINISH_LENGTH


class Generator(Protocol):
    name: str
    version: str

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Sample]: ...


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
        import transformers

        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = sorted(set(eos_ids))
        self.batch_size = batch_size
        self.version = transformers.__version__
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        # transformers 5.2x renamed past_key_values to cache; older releases (vLLM's pin) know only the first.
        self.cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

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
        tokens_BT, logps_BT = [], []
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        step_ids = input_ids
        for _ in range(params.max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self.cache_kwarg: cache}).logits[:, -1]
            logp_BV = sampling_logprobs(logits, params.temperature, params.top_p)
            # Sample on the CPU generator so a seed means the same tokens on any device.
            next_B = torch.multinomial(logp_BV.exp().cpu(), 1, generator=gen).squeeze(-1).to(device)
            next_B = torch.where(finished, torch.full_like(next_B, self.pad_id), next_B)
            tokens_BT.append(next_B)
            logps_BT.append(logp_BV.gather(-1, next_B[:, None]).squeeze(-1))
            finished |= torch.isin(next_B, eos)
            if bool(finished.all()):
                break
            step_ids = next_B[:, None]
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        return self._collect(torch.stack(tokens_BT, 1).cpu(), torch.stack(logps_BT, 1).cpu(), eos.cpu())

    def _collect(self, tokens_BT: torch.Tensor, logps_BT: torch.Tensor, eos: torch.Tensor) -> list[Sample]:
        from rladctl.schema import FINISH_LENGTH, FINISH_STOP

        samples = []
        for toks, lps in zip(tokens_BT.tolist(), logps_BT.tolist()):
            stop = next((t for t, tok in enumerate(toks) if tok in self.eos_ids), None)
            end = len(toks) if stop is None else stop + 1  # the EOS token is part of the completion
            samples.append(Sample(toks[:end], lps[:end], FINISH_LENGTH if stop is None else FINISH_STOP))
        return samples


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = []
    gen_cfg = getattr(model, "generation_config", None)
    for source in (getattr(gen_cfg, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.append(source)
        elif source:
            ids.extend(source)
    return sorted(set(ids))
