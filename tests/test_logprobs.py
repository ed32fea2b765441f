"""logprobs: chunked lm-head log-probs (forward and backward) against naive autograd, row batches, buckets."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rladctl.backends import logprobs as L
from rladctl.backends.logprobs import (
    build_row_batch,
    lm_head_logprobs,
    pad_rows,
    pass_overhead_tokens,
    split_rows,
    tight_length_buckets,
)


def naive_logprobs(h_NH: torch.Tensor, w_VH: torch.Tensor, targets_N: torch.Tensor, temperature: float) -> torch.Tensor:
    """The full [N, V] log_softmax the chunked version must equal; autograd gives its gradients."""
    logp_NV = torch.log_softmax(h_NH @ w_VH.T / temperature, dim=-1)
    return logp_NV.gather(-1, targets_N[:, None]).squeeze(-1)  # [N]


def random_case(n: int, v: int, hidden: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h_NH = torch.randn(n, hidden, generator=gen)
    w_VH = torch.randn(v, hidden, generator=gen) * 0.5
    targets_N = torch.randint(0, v, (n,), generator=gen)
    grad_N = torch.randn(n, generator=gen)  # upstream gradient, so every position weighs differently
    return h_NH, w_VH, targets_N, grad_N


def test_hand_derived_value():
    # logits = h W^T = [1, 0, 0]; log softmax at target 0 = 1 - log(e + 2) = -0.55144;
    # at temperature 2 the logits are [0.5, 0, 0]: 0.5 - log(e^0.5 + 2) = -0.77437.
    h = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    targets = torch.tensor([0, 0])
    got = lm_head_logprobs(h, w, targets, temperature=1.0, chunk_tokens=1, chunk_vocab=2)
    assert got.tolist() == pytest.approx([1 - math.log(math.e + 2)] * 2, abs=1e-6)
    got = lm_head_logprobs(h, w, targets, temperature=2.0, chunk_tokens=1, chunk_vocab=2)
    assert got.tolist() == pytest.approx([0.5 - math.log(math.exp(0.5) + 2)] * 2, abs=1e-6)


# N = 37 and V = 101 are prime, so every chunk size below except the whole-size ones leaves a ragged
# last chunk; 1 and sizes past N or V are the edges.
CHUNKS = [(1, 1), (1, 101), (8, 16), (10, 33), (37, 101), (64, 1000), (5, 7)]


@pytest.mark.parametrize("chunk_tokens,chunk_vocab", CHUNKS)
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_forward_and_backward_equal_naive_autograd(chunk_tokens, chunk_vocab, temperature):
    h_NH, w_VH, targets_N, grad_N = random_case(37, 101, seed=chunk_tokens * 1000 + chunk_vocab)
    h_ref, w_ref = h_NH.clone().requires_grad_(), w_VH.clone().requires_grad_()
    h_got, w_got = h_NH.clone().requires_grad_(), w_VH.clone().requires_grad_()

    ref_N = naive_logprobs(h_ref, w_ref, targets_N, temperature)
    got_N = lm_head_logprobs(h_got, w_got, targets_N, temperature, chunk_tokens, chunk_vocab)
    assert got_N.dtype == torch.float32 and got_N.shape == (37,)
    torch.testing.assert_close(got_N, ref_N, atol=1e-5, rtol=0)

    (ref_N * grad_N).sum().backward()
    (got_N * grad_N).sum().backward()
    torch.testing.assert_close(h_got.grad, h_ref.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(w_got.grad, w_ref.grad, atol=1e-5, rtol=0)


def test_repeated_targets_accumulate_into_the_same_weight_row():
    # Every position samples id 3, so d/dW[3] sums N contributions (index_add_, not assignment).
    h_NH, w_VH, _, grad_N = random_case(12, 9, seed=3)
    targets_N = torch.full((12,), 3)
    w_ref, w_got = w_VH.clone().requires_grad_(), w_VH.clone().requires_grad_()
    (naive_logprobs(h_NH, w_ref, targets_N, 1.0) * grad_N).sum().backward()
    (lm_head_logprobs(h_NH, w_got, targets_N, 1.0, 5, 4) * grad_N).sum().backward()
    torch.testing.assert_close(w_got.grad, w_ref.grad, atol=1e-5, rtol=0)


def test_gradient_only_for_the_inputs_that_need_it():
    h_NH, w_VH, targets_N, _ = random_case(6, 11, seed=4)
    h = h_NH.clone().requires_grad_()
    lm_head_logprobs(h, w_VH, targets_N, 1.0, 4, 4).sum().backward()
    assert h.grad is not None and w_VH.grad is None


def test_no_tensor_larger_than_one_chunk_is_built(monkeypatch):
    """The point of the module: forward and backward only ever see [chunk_tokens, chunk_vocab] logits."""
    shapes = []
    real = L._chunk_logits

    def spy(h, w, temperature):
        out = real(h, w, temperature)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(L, "_chunk_logits", spy)
    h_NH, w_VH, targets_N, _ = random_case(50, 200, seed=5)
    h = h_NH.clone().requires_grad_()
    lm_head_logprobs(h, w_VH, targets_N, 1.0, chunk_tokens=16, chunk_vocab=64).sum().backward()
    # forward: 4 token chunks x 4 vocab chunks; backward recomputes the same 16
    assert len(shapes) == 32
    assert max(n for n, _ in shapes) <= 16 and max(v for _, v in shapes) <= 64
    assert (2, 8) in shapes  # the ragged corner: 50 = 3*16 + 2 tokens, 200 = 3*64 + 8 ids


def test_empty_input_gives_empty_output_that_backpropagates():
    h = torch.zeros(0, 4, requires_grad=True)
    out = lm_head_logprobs(h, torch.randn(5, 4), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)
    out.sum().backward()
    assert h.grad is not None and h.grad.shape == (0, 4)


def test_build_row_batch_hand_case():
    # rows: [5 6 7 | 1 2] and [8 | 3 4 5]; the last completion token is never an input.
    batch = build_row_batch([[5, 6, 7], [8]], [[1, 2], [3, 4, 5]], pad_id=0, device="cpu")
    assert batch.input_ids_BL.tolist() == [[5, 6, 7, 1], [8, 3, 4, 0]]
    assert batch.rows_N.tolist() == [0, 0, 1, 1, 1]
    # token t of a completion is predicted by position prompt_len + t - 1
    assert batch.positions_N.tolist() == [2, 3, 0, 1, 2]
    assert batch.targets_N.tolist() == [1, 2, 3, 4, 5]
    assert batch.lengths_B == [2, 3]


def test_build_row_batch_positions_hold_the_token_before_each_target():
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 50) for _ in range(rng.randint(1, 9))] for _ in range(20)]
    completions = [[rng.randrange(1, 50) for _ in range(rng.randint(1, 9))] for _ in range(20)]
    batch = build_row_batch(prompts, completions, pad_id=0, device="cpu")
    previous = [(p + c)[len(p) - 1 + t] for p, c in zip(prompts, completions) for t in range(len(c))]
    assert batch.input_ids_BL[batch.rows_N, batch.positions_N].tolist() == previous
    assert batch.targets_N.tolist() == [tok for c in completions for tok in c]
    # every position read is a real token, before its row's padding
    real_lengths = torch.tensor([len(p) + len(c) - 1 for p, c in zip(prompts, completions)])
    assert (batch.positions_N < real_lengths[batch.rows_N]).all()
    assert batch.input_ids_BL.shape[1] == int(real_lengths.max())


def test_split_and_pad_rows_invert_the_flattening():
    flat_N = torch.arange(6, dtype=torch.float32)  # rows of length 1, 0, 3, 2
    assert [t.tolist() for t in split_rows(flat_N, [1, 0, 3, 2])] == [[0.0], [], [1.0, 2.0, 3.0], [4.0, 5.0]]
    padded_BT, mask_BT = pad_rows(flat_N, [1, 0, 3, 2])
    assert padded_BT.tolist() == [[0, 0, 0], [0, 0, 0], [1, 2, 3], [4, 5, 0]]
    assert mask_BT.tolist() == [[True, False, False], [False] * 3, [True] * 3, [True, True, False]]


def _partition_cost(buckets, lengths, overhead):
    return sum(len(b) * max(lengths[i] for i in b) + overhead for b in buckets)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget,overhead", [(1, 0), (40, 5), (120, 30), (1000, 0), (1000, 200)])
def test_tight_length_buckets_is_the_cheapest_contiguous_split(seed, budget, overhead):
    """Slow reference: every way to cut the sorted rows into contiguous runs (2^(n-1) of them)."""
    import itertools

    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 8), rng.randint(1, 60)]) for _ in range(rng.randint(1, 11))]
    buckets = tight_length_buckets(lengths, budget, overhead)
    flat = [i for b in buckets for i in b]
    assert flat == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))  # sorted, every row once
    assert all(len(b) * max(lengths[i] for i in b) <= budget or len(b) == 1 for b in buckets)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=len(flat) - 1):
        runs, start = [], 0
        for k, c in enumerate(cuts, 1):
            if c:
                runs.append(flat[start:k])
                start = k
        runs.append(flat[start:])
        if all(len(r) * max(lengths[i] for i in r) <= budget or len(r) == 1 for r in runs):
            best = min(best, _partition_cost(runs, lengths, overhead))
    assert _partition_cost(buckets, lengths, overhead) == best


def _buckets_row_by_row(lengths, budget, overhead):
    """The planner's dynamic programme as a plain loop over every (end, start) pair."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sorted_len = [lengths[i] for i in order]
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        width = sorted_len[j - 1]
        for i in range(j - 1, -1, -1):
            if (j - i) * width > budget and i != j - 1:
                break
            if best[i] + (j - i) * width + overhead < best[j]:
                best[j], cut[j] = best[i] + (j - i) * width + overhead, i
    batches, j = [], len(order)
    while j > 0:
        batches.append(order[cut[j] : j])
        j = cut[j]
    return batches[::-1]


@pytest.mark.parametrize("seed", range(8))
def test_tight_length_buckets_equals_the_row_by_row_loop(seed):
    """Rollout-sized inputs with many equal lengths (ties go the same way) and zero-length rows."""
    rng = random.Random(seed)
    n = rng.choice([1, 7, 200, 513])
    lengths = [rng.choice([0, rng.randint(1, 9), rng.randint(1, 300)]) for _ in range(n)]
    for budget, overhead in [(1, 0), (64, 32), (2048, 32), (16384, 1024)]:
        assert tight_length_buckets(lengths, budget, overhead) == _buckets_row_by_row(lengths, budget, overhead)


def test_tight_length_buckets_splits_a_long_tail():
    # Filling to the budget would pad three short rows to the long one (400 padded tokens); a
    # tight split pays one more forward instead.
    lengths = [10, 10, 10, 100]
    assert tight_length_buckets(lengths, 1000, 50) == [[0, 1, 2], [3]]  # 30 + 100 + 2 x 50 = 230 < 400 + 50
    assert tight_length_buckets(lengths, 1000, 500) == [[0, 1, 2, 3]]  # a forward costs more than the padding
    assert tight_length_buckets([], 100, 10) == []
    assert tight_length_buckets([50, 2], 10, 0) == [[1], [0]]  # a row past the budget rides alone
    assert tight_length_buckets([5] * 5, 20, 1) == [[0, 1, 2, 3], [4]]  # 4 rows of 5 fill 20 exactly


def test_a_forward_pass_is_priced_higher_on_a_gpu():
    assert pass_overhead_tokens(16_384, "cuda") == 1_024 and pass_overhead_tokens(16_384, "cpu") == 32
    assert pass_overhead_tokens(256, "cpu") == 16


def test_sequence_logprobs_of_a_padded_batch_equal_each_row_alone(models):
    """Rows of very different lengths in one right-padded batch, run without an attention mask:
    every completion token's log-prob equals that of the row run alone, and the gradient too."""
    from rladctl.backends.logprobs import sequence_logprobs
    from rladctl.models.loading import load_model

    model = load_model(models["student"], dtype="float32", device="cpu", for_training=True)
    prompts = [[5, 6, 7], [9], [5, 5, 5, 5, 5, 5]]
    completions = [[11, 12], [13, 14, 15, 16, 17, 18, 19, 20], [21, 22, 23]]
    batch = build_row_batch(prompts, completions, pad_id=0, device="cpu")
    together = sequence_logprobs(model, batch)
    alone = torch.cat(
        [sequence_logprobs(model, build_row_batch([p], [c], 0, "cpu")) for p, c in zip(prompts, completions)]
    )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    head = model.get_output_embeddings().weight
    g_together = torch.autograd.grad(together.sum(), head)[0]
    g_alone = torch.autograd.grad(alone.sum(), head)[0]
    torch.testing.assert_close(g_together, g_alone, atol=1e-5, rtol=0)
