"""The hf sampling loop: inverse-CDF draws, and rows that stop leaving the batch change no token."""

from __future__ import annotations

import pytest
import torch

from rladctl.backends.hf import (
    HFGenerator,
    SamplingParams,
    sample_inverse_cdf,
    sampling_logprobs,
)


def test_inverse_cdf_draws_follow_the_distribution_and_never_a_zero_probability_id():
    probs = torch.tensor([0.1, 0.0, 0.3, 0.0, 0.6, 0.0])
    logp = probs.log().expand(20_000, -1)
    ids = sample_inverse_cdf(logp, torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    freq = torch.bincount(ids, minlength=6).float() / 20_000
    assert freq[[1, 3, 5]].sum() == 0
    assert torch.allclose(freq, probs, atol=0.015), freq  # 4 sigma of a 20k-draw frequency is < 0.014


def test_inverse_cdf_edges_hand_derived():
    logp = torch.tensor([[0.25, 0.25, 0.5, 0.0]]).log().expand(4, -1)
    u = torch.tensor([0.0, 0.2499, 0.25, 1.0 - 1e-16], dtype=torch.float64)
    # cdf = [.25, .5, 1, 1]: u x 1 lands in the first rise above it; the end never picks id 3 (p = 0)
    assert sample_inverse_cdf(logp, u).tolist() == [0, 0, 1, 2]


@pytest.fixture(scope="module")
def generator(models):
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer

    model = load_model(models["student"], dtype="float32", device="cpu")
    # Forty frequent ids count as EOS, so rows stop at many different steps and the batch shrinks often.
    return HFGenerator(model, load_tokenizer(models["student"]), eos_ids=list(range(40, 80)), batch_size=16)


def test_rows_leaving_the_batch_change_no_token_or_logprob(generator, monkeypatch):
    import transformers

    prompts = [[5, 6, 7, 8, 9][: 2 + i % 4] for i in range(16)]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=40, seed=3)
    compacted = generator.generate(prompts, params)
    lengths = sorted(len(s.token_ids) for s in compacted)
    assert lengths[0] < lengths[len(lengths) // 2] < lengths[-1], lengths  # rows really stopped apart
    assert sum(s.finish_reason == "stop" for s in compacted) >= 8
    monkeypatch.delattr(transformers.cache_utils.Cache, "batch_select_indices")  # the loop then keeps every row
    whole = generator.generate(prompts, params)
    for a, b in zip(compacted, whole):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_sampled_logprobs_equal_a_forward_pass_of_each_row(generator):
    prompts = [[5, 6, 7], [9, 8], [5, 5, 5, 5]] * 4
    params = SamplingParams(temperature=0.7, top_p=1.0, max_new_tokens=24, seed=1)
    for prompt, sample in zip(prompts, generator.generate(prompts, params)):
        with torch.no_grad():
            logits = generator.model(torch.tensor([prompt + sample.token_ids])).logits[0, len(prompt) - 1 : -1]
        ref = sampling_logprobs(logits, 0.7, 1.0).gather(-1, torch.tensor(sample.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(ref, torch.tensor(sample.logprobs), atol=1e-4)
