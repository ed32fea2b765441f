"""The backends registry: one module per name, capabilities asked of the record, fallback, factories."""

from __future__ import annotations

import pytest
import torch

from rladctl import backends
from rladctl.config import RolloutConfig, ScoreTeacherConfig
from rladctl.errors import MissingDependencyError


@pytest.fixture
def no_vllm(monkeypatch):
    """vllm cannot run here, whether or not it is installed."""

    def missing():
        raise MissingDependencyError(
            "the vllm backend needs the vllm package, which is not installed", None, "install it"
        )

    monkeypatch.setattr("rladctl.backends.vllm.import_vllm", missing)


def test_every_recipe_name_is_a_module_whose_record_carries_its_capabilities():
    assert backends.backend_names() == ("hf", "vllm")
    for name in backends.backend_names():
        assert backends.get(name).name == name
    hf, vllm = backends.get("hf"), backends.get("vllm")
    # hf is data-parallel under torchrun and leaves scored fingerprints as they were before the key existed.
    assert (hf.one_process, dict(hf.fingerprint)) == (False, {})
    assert (vllm.one_process, dict(vllm.fingerprint)) == (True, {"backend": "vllm"})


def test_fallback_to_hf_only_when_asked(no_vllm):
    assert backends.resolve("hf", False).name == "hf"
    assert backends.resolve("vllm", True).name == "hf"
    with pytest.raises(MissingDependencyError, match="not installed"):
        backends.resolve("vllm", False)


def test_hf_factories_load_on_the_engine_and_describe_themselves(models, no_vllm):
    from transformers import AutoConfig

    engine = RolloutConfig(backend="vllm", fallback_to_hf=True, dtype="float32", device="cpu")
    generator = backends.load_generator(engine, str(models["student"]), batch_size=3, seed=0)
    context = AutoConfig.from_pretrained(models["student"]).max_position_embeddings
    assert generator.info == backends.BackendInfo("hf", generator.version, "torch.float32")
    assert (
        generator.context_length == context
        and generator.batch_size == 3
        and generator.info.entry()
        == {
            "name": "hf",
            "version": generator.version,
        }
    )
    samples = generator.generate([[5, 6, 7]] * 2, backends.SamplingParams(max_new_tokens=4, seed=1))
    assert len(samples) == 2 and all(len(s.token_ids) == len(s.logprobs) <= 4 for s in samples)
    generator.close()

    params = backends.ScoringParams(temperature=1.0, top_k=2)
    scorer = backends.load_scorer(ScoreTeacherConfig(dtype="float32", device="cpu"), str(models["teacher"]), params)
    assert scorer.info.name == "hf" and scorer.vocab_size == AutoConfig.from_pretrained(models["teacher"]).vocab_size
    heard: list[int] = []
    teacher, topk = scorer.score([[5, 6], [7]], [[8, 9, 10], [11]], heard.append)
    assert [len(row) for row in teacher] == [3, 1] and sum(heard) == 4  # on_tokens hears every completion token
    assert all(max(row) <= 0 for row in teacher)
    ids, lps = topk[0]
    assert len(ids) == len(lps) == 3 and all(len(k) == 2 for k in ids)
    assert torch.tensor(teacher[0]).le(torch.tensor(lps)[:, 0] + 1e-6).all()  # no token beats the top-1
