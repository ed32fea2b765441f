"""Sampled-token log-probs without a full [tokens x vocab] float32 tensor (DESIGN §5).

``lm_head_logprobs`` computes log softmax(h W^T / tau)[target] chunk by chunk: token chunks times
vocabulary chunks, with an online logsumexp kept in float32. Its backward recomputes each logits
chunk instead of saving it, so the full logits never exist in the forward or the backward pass.

``sequence_logprobs`` runs a causal LM's backbone over right-padded (prompt + completion) rows and
returns the log-prob of every completion token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rladctl.errors import ModelError


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    # In h's dtype: under bf16 autocast h is bf16 and w a float32 weight, and the backward, which
    # runs after the autocast block, must recompute the very logits the forward saw.
    return (h @ w.T.to(h.dtype)).float() / temperature  # [n, v] float32


def _logsumexp_chunked(
    h_NH: torch.Tensor, w_VH: torch.Tensor, temperature: float, chunk_vocab: int, targets_N: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online logsumexp over vocabulary chunks, and each target's logit from the same chunks.

    Taking the target logit from the very matmul that feeds the logsumexp keeps log p <= 0 and the
    forward consistent with the backward's softmax, also in bf16. Returns ([N], [N]) float32.
    """
    running_max = torch.full((h_NH.shape[0],), -float("inf"), dtype=torch.float32, device=h_NH.device)
    running_sum = torch.zeros_like(running_max)
    target_logit = torch.zeros_like(running_max)
    for v0 in range(0, w_VH.shape[0], chunk_vocab):
        logits = _chunk_logits(h_NH, w_VH[v0 : v0 + chunk_vocab], temperature)  # [N, v]
        local = targets_N - v0
        inside = (local >= 0) & (local < logits.shape[1])
        target_logit = torch.where(
            inside, logits.gather(1, local.clamp(0, logits.shape[1] - 1)[:, None]).squeeze(1), target_logit
        )
        chunk_max = logits.max(dim=-1).values
        new_max = torch.maximum(running_max, chunk_max)
        running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(logits - new_max[:, None]).sum(-1)
        running_max = new_max
    return running_max + torch.log(running_sum), target_logit


class _ChunkedLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_NH, w_VH, targets_N, temperature, chunk_tokens, chunk_vocab):
        out = torch.empty(h_NH.shape[0], dtype=torch.float32, device=h_NH.device)
        lse_N = torch.empty_like(out)
        for t0 in range(0, h_NH.shape[0], chunk_tokens):
            h = h_NH[t0 : t0 + chunk_tokens]  # [n, H]
            lse, target_logit = _logsumexp_chunked(h, w_VH, temperature, chunk_vocab, targets_N[t0 : t0 + chunk_tokens])
            out[t0 : t0 + chunk_tokens] = target_logit - lse
            lse_N[t0 : t0 + chunk_tokens] = lse
        ctx.save_for_backward(h_NH, w_VH, targets_N, lse_N)
        ctx.cfg = (temperature, chunk_tokens, chunk_vocab)
        return out

    @staticmethod
    def backward(ctx, grad_N):
        # d logp / d logits = onehot(target) - softmax; chain through logits = h W^T / tau.
        h_NH, w_VH, targets_N, lse_N = ctx.saved_tensors
        temperature, chunk_tokens, chunk_vocab = ctx.cfg
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(h_NH, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros_like(w_VH, dtype=torch.float32) if need_w else None
        g_N = grad_N.float() / temperature
        for t0 in range(0, h_NH.shape[0], chunk_tokens):
            sl = slice(t0, t0 + chunk_tokens)
            h, g, lse = h_NH[sl], g_N[sl], lse_N[sl]
            for v0 in range(0, w_VH.shape[0], chunk_vocab):
                w = w_VH[v0 : v0 + chunk_vocab]
                p = torch.exp(_chunk_logits(h, w, temperature) - lse[:, None])  # [n, v] softmax slice
                gp = p * g[:, None]
                if need_h:
                    grad_h[sl] -= gp @ w.float()
                if need_w:
                    grad_w[v0 : v0 + chunk_vocab] -= gp.T @ h.float()
            tgt = targets_N[sl]
            if need_h:
                grad_h[sl] += g[:, None] * w_VH[tgt].float()
            if need_w:
                grad_w.index_add_(0, tgt, g[:, None] * h.float())
        return (
            grad_h.to(h_NH.dtype) if need_h else None,
            grad_w.to(w_VH.dtype) if need_w else None,
            None,
            None,
            None,
            None,
        )


def lm_head_logprobs(
    h_NH: torch.Tensor,
    w_VH: torch.Tensor,
    targets_N: torch.Tensor,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    chunk_vocab: int = 32_768,
) -> torch.Tensor:
    """log softmax(h W^T / temperature)[target] for each of N positions, as float32 [N].

    Memory beyond the inputs is O(chunk_tokens x chunk_vocab), in forward and backward.
    """
    if h_NH.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float32, device=h_NH.device) + 0 * h_NH.sum()
    return _ChunkedLogProb.apply(h_NH, w_VH, targets_N, float(temperature), int(chunk_tokens), int(chunk_vocab))


# --------------------------------------------------------------------------------------------
# causal-LM rows


@dataclass
class RowBatch:
    """Right-padded (prompt + completion) rows and where their completion tokens sit.

    No attention mask: under causal attention a real position never sees the padding after it
    (see ``completion_hidden``).
    """

    input_ids_BL: torch.Tensor
    rows_N: torch.Tensor  # row of each completion token
    positions_N: torch.Tensor  # position whose hidden state predicts it (prompt_len + t - 1)
    targets_N: torch.Tensor  # the completion token
    lengths_B: list[int]  # completion length per row


def build_row_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device) -> RowBatch:
    """Each row is prompt + completion[:-1]: the last completion token predicts nothing we need."""
    seqs = [p + c[:-1] for p, c in zip(prompts, completions)]
    width = max(1, max(len(s) for s in seqs))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    rows, positions, targets = [], [], []
    for b, (p, c, s) in enumerate(zip(prompts, completions, seqs)):
        input_ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        rows += [b] * len(c)
        positions += range(len(p) - 1, len(p) - 1 + len(c))
        targets += c
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return RowBatch(
        input_ids.to(device), as_long(rows), as_long(positions), as_long(targets), [len(c) for c in completions]
    )


def output_head(model) -> torch.Tensor:
    """The LM head weight [V, H]; models with a bias or logit soft-capping are not supported."""
    head = model.get_output_embeddings()
    cfg = model.config
    if (
        getattr(head, "bias", None) is not None
        or getattr(cfg, "final_logit_softcapping", None)
        or getattr(cfg, "logit_scale", None)
    ):
        raise ModelError(
            f"model type '{cfg.model_type}' post-processes its logits (bias, soft-capping or scale)",
            None,
            "rladctl's chunked log-probs support plain linear LM heads (Llama, Qwen, Mistral, ...)",
        )
    return head.weight


def completion_hidden(model, batch: RowBatch) -> torch.Tensor:
    """Final hidden states at the positions that predict completion tokens, [N, H].

    No attention mask is passed: every row is right-padded, so under causal attention a real
    position never sees padding (it comes later), and the positions read here get exactly the
    values a masked pass gives them, while attention takes its unmasked causal kernel.
    """
    backbone = model.get_decoder()
    hidden_BLH = backbone(input_ids=batch.input_ids_BL, use_cache=False).last_hidden_state
    return hidden_BLH[batch.rows_N, batch.positions_N]


def sequence_logprobs(
    model,
    batch: RowBatch,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    chunk_vocab: int = 32_768,
) -> torch.Tensor:
    """Log-prob of every completion token, flat [N] float32 in row-major order (row, then t)."""
    h_NH = completion_hidden(model, batch)
    return lm_head_logprobs(h_NH, output_head(model), batch.targets_N, temperature, chunk_tokens, chunk_vocab)


@torch.no_grad()
def topk_logprobs(
    h_NH: torch.Tensor,
    w_VH: torch.Tensor,
    k: int,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    chunk_vocab: int = 32_768,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids [N, k] (int32) and log-probs [N, k] (float32), O(chunk_tokens x chunk_vocab) memory."""
    ids_out, lps_out = [], []
    dummy = torch.zeros(0, dtype=torch.long, device=h_NH.device)
    for t0 in range(0, h_NH.shape[0], chunk_tokens):
        h = h_NH[t0 : t0 + chunk_tokens]
        lse, _ = _logsumexp_chunked(h, w_VH, temperature, chunk_vocab, dummy.new_zeros(h.shape[0]))
        best_v = torch.full((h.shape[0], 0), -float("inf"), device=h.device)
        best_i = torch.zeros((h.shape[0], 0), dtype=torch.long, device=h.device)
        for v0 in range(0, w_VH.shape[0], chunk_vocab):
            logits = _chunk_logits(h, w_VH[v0 : v0 + chunk_vocab], temperature)
            values, index = logits.topk(min(k, logits.shape[1]), dim=-1)
            best_v, order = torch.cat([best_v, values], 1).topk(min(k, best_v.shape[1] + values.shape[1]), dim=-1)
            best_i = torch.cat([best_i, index + v0], 1).gather(1, order)
        ids_out.append(best_i.to(torch.int32))
        lps_out.append(best_v - lse[:, None])
    return torch.cat(ids_out), torch.cat(lps_out)


def split_rows(flat_N: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    return list(torch.split(flat_N, lengths))


def pad_rows(flat_N: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token values to [B, T] with a bool mask (padding is 0)."""
    width = max(lengths, default=0)
    out = flat_N.new_zeros((len(lengths), max(width, 1)))
    mask = torch.zeros((len(lengths), max(width, 1)), dtype=torch.bool, device=flat_N.device)
    rows = torch.repeat_interleave(
        torch.arange(len(lengths), device=flat_N.device), torch.tensor(lengths, device=flat_N.device)
    )
    cols = torch.cat([torch.arange(n, device=flat_N.device) for n in lengths]) if lengths else rows
    out = out.index_put((rows, cols), flat_N)
    mask[rows, cols] = True
    return out, mask


def pass_overhead_tokens(budget_tokens: int, device: torch.device | str) -> int:
    """What one more forward pass costs, in padded tokens, for ``tight_length_buckets``.

    On a GPU a pass has a fixed launch cost worth many tokens (priced at budget / 16); on a CPU the
    work is close to linear in tokens (tiny-10m: about 18 ms a pass, 0.65 ms a token), so 32.
    """
    per_pass = budget_tokens // 16
    return per_pass if torch.device(device).type == "cuda" else min(per_pass, 32)


def tight_length_buckets(lengths: list[int], budget_tokens: int, overhead_tokens: int) -> list[list[int]]:
    """Rows sorted by length, split into micro-batches with the least padding.

    Minimises sum over micro-batches of (rows x longest length + ``overhead_tokens``) subject to
    at most ``budget_tokens`` padded tokens each (a row longer than that rides alone); dynamic
    programming over the sorted lengths. Filling each micro-batch up to the budget instead pads a
    long-tailed set of rows (RL rollouts) to its longest; here a micro-batch closes once its
    padding costs more than another forward pass, which ``overhead_tokens`` prices in padded
    tokens. Every micro-batch lists rows shortest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sorted_len = [lengths[i] for i in order]
    n = len(order)
    best = np.full(n + 1, np.inf)  # best[j]: cost of the first j sorted rows
    best[0] = 0.0
    cut = [0] * (n + 1)  # best[j]'s last micro-batch starts at sorted row cut[j]
    starts = np.arange(n + 1)
    for j in range(1, n + 1):
        width = sorted_len[j - 1]  # the longest row of any micro-batch ending at j - 1
        rows = j if width <= 0 else max(1, min(j, budget_tokens // width))  # the most that fit
        cost = best[j - rows : j] + (j - starts[j - rows : j]) * width + overhead_tokens
        last = rows - 1 - int(np.argmin(cost[::-1]))  # a tie goes to the shortest micro-batch
        best[j], cut[j] = cost[last], j - rows + last
    batches, j = [], n
    while j > 0:
        batches.append(order[cut[j] : j])
        j = cut[j]
    return batches[::-1]
