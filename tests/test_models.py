"""Presets, tokenizer training, deterministic init, safe loading, identity hashes, vocab checks."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from rladctl.errors import ConfigError, MissingPathError, ModelError
from rladctl.models.factory import PRESETS, count_params, init_model
from rladctl.models.hub import locate
from rladctl.models.identity import hash_cache_file, model_identity
from rladctl.models.loading import load_model, resolve_device, resolve_dtype
from rladctl.models.tokenizer import (
    EOS_TOKEN,
    MARKUP_TOKENS,
    TOKENIZER_FILES,
    check_same_vocab,
    load_tokenizer,
    train_tokenizer,
)

TEXTS = ["12+7=19", "Amelia is a knight"] * 50


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """teacher (seed 0), twin (seed 0, same texts), other (seed 1), student (seed 2, teacher's tokenizer)."""
    root = tmp_path_factory.mktemp("models")
    built = {
        "teacher": init_model(root / "teacher", "tiny-1m", texts=TEXTS, seed=0),
        "twin": init_model(root / "twin", "tiny-1m", texts=TEXTS, seed=0),
        "other": init_model(root / "other", "tiny-1m", texts=TEXTS, seed=1),
    }
    built["student"] = init_model(root / "student", "tiny-1m", tokenizer=built["teacher"], seed=2)
    return built


# ---- presets -------------------------------------------------------------------------------


def test_count_params_tiny_1m_by_hand_and_against_the_real_model():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    # per layer: q,o 2*128*128 + k,v 2*128*64 + q/k norms 2*32 + MLP 3*128*384 + 2 norms 2*128
    #          = 32768 + 16384 + 64 + 147456 + 256 = 196928; 4 layers = 787712
    # + tied embedding 512*128 = 65536 + final norm 128 -> 853376
    assert count_params("tiny-1m", 512) == 853_376
    model = Qwen3ForCausalLM(Qwen3Config(**PRESETS["tiny-1m"], vocab_size=512))
    assert sum(p.numel() for p in model.parameters()) == 853_376


def test_count_params_of_the_qwen3_shapes_match_the_published_sizes():
    # Qwen3-0.6B: 0.60B total with tied embeddings; Qwen3-8B: 8.19B with an untied lm_head.
    assert count_params("qwen3-0.6b") == 596_049_920
    assert count_params("qwen3-8b") == 8_190_735_360
    # untying adds exactly one more V*H matrix
    assert count_params("qwen3-8b", 100) - count_params("qwen3-8b", 0) == 2 * 100 * 4096


@pytest.mark.parametrize("name,millions", [("tiny-1m", 1), ("tiny-4m", 4), ("tiny-10m", 10), ("tiny-50m", 50)])
def test_tiny_presets_are_near_their_names(name, millions):
    assert abs(math.log(count_params(name, 512) / (millions * 1e6))) < math.log(1.25)
    assert PRESETS[name]["tie_word_embeddings"] and PRESETS[name]["max_position_embeddings"] == 2048


def test_unknown_preset_suggests_a_close_name(tmp_path):
    with pytest.raises(ConfigError) as exc:
        init_model(tmp_path / "m", "tiny1m", texts=TEXTS)
    assert "did you mean 'tiny-1m'" in one_line(exc)
    with pytest.raises(ConfigError, match="pass vocab_size"):
        count_params("tiny-4m")


# ---- tokenizer -----------------------------------------------------------------------------


def test_train_tokenizer_is_deterministic_and_splits_digits():
    a, b = train_tokenizer(TEXTS), train_tokenizer(list(TEXTS))
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert a.convert_ids_to_tokens(a("1234+5")["input_ids"]) == ["1", "2", "3", "4", "+", "5"]
    assert len(a) <= 512 and a.eos_token == a.pad_token == EOS_TOKEN and a.eos_token_id == 0
    assert a.bos_token is None and not a.chat_template


def test_train_tokenizer_is_identical_in_a_fresh_process():
    """The Rust trainer's hash maps are seeded per process; merges must not depend on that."""
    import subprocess
    import sys

    texts = TEXTS + ["the quick brown fox jumps over 13 lazy dogs", "ab ba abab baba"] * 20
    code = "import json,sys; from rladctl.models.tokenizer import train_tokenizer as t; print(t(json.load(sys.stdin)).backend_tokenizer.to_str())"
    fresh = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True
    )
    assert fresh.stdout.strip() == train_tokenizer(texts).backend_tokenizer.to_str()


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_markup_tokens_are_single_ids_that_survive_skip_special_tokens(kind):
    tok = train_tokenizer(TEXTS, kind=kind)
    text = "so <answer>19</answer>"
    ids = tok(text + EOS_TOKEN)["input_ids"]
    for markup in MARKUP_TOKENS:
        assert len(tok(markup)["input_ids"]) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == text + EOS_TOKEN


def test_char_tokenizer_falls_back_to_bytes_for_unseen_characters():
    tok = train_tokenizer(TEXTS, kind="char")
    ids = tok("Amelia é中")["input_ids"]
    # 'Amelia' and ' ' are seen characters; é is 2 UTF-8 bytes and 中 is 3, each one <0xNN> token
    assert tok.convert_ids_to_tokens(ids)[:7] == ["A", "m", "e", "l", "i", "a", " "]
    assert len(ids) == 7 + 2 + 3
    assert tok.decode(ids) == "Amelia é中"


def test_train_tokenizer_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="at least 261"):
        train_tokenizer(TEXTS, vocab_size=100)
    with pytest.raises(ConfigError, match="unknown tokenizer kind"):
        train_tokenizer(TEXTS, kind="wordpiece")


# ---- init_model ----------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(models):
    teacher, twin, other = models["teacher"], models["twin"], models["other"]
    assert sha256(teacher / "model.safetensors") == sha256(twin / "model.safetensors")
    assert sha256(teacher / "model.safetensors") != sha256(other / "model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"):
        assert sha256(teacher / name) == sha256(twin / name) == sha256(other / name), name


def test_student_shares_the_teachers_tokenizer_files_exactly(models):
    teacher, student = models["teacher"], models["student"]
    names = [n for n in TOKENIZER_FILES if (teacher / n).is_file()]
    assert "tokenizer.json" in names
    for name in names:
        assert sha256(teacher / name) == sha256(student / name), name
    check_same_vocab(load_tokenizer(teacher), load_tokenizer(student))
    assert sha256(teacher / "model.safetensors") != sha256(student / "model.safetensors")


def test_output_loads_with_plain_auto_classes_and_generates(models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models["teacher"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == model.config.pad_token_id == tok.eos_token_id == 0
    assert model.generation_config.eos_token_id == 0 and model.generation_config.pad_token_id == 0
    assert sum(p.numel() for p in model.parameters()) == count_params("tiny-1m", len(tok))
    prompt = tok("12+7=", return_tensors="pt")["input_ids"]  # [1, T]
    out = model.generate(prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, prompt.shape[1] + 3)
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_existing_directory_needs_overwrite(models, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(models["teacher"], out)
    with pytest.raises(ModelError) as exc:
        init_model(out, "tiny-1m", tokenizer=models["teacher"], seed=1)
    assert "--overwrite" in one_line(exc)
    init_model(out, "tiny-1m", tokenizer=models["teacher"], seed=1, overwrite=True)
    assert sha256(out / "model.safetensors") == sha256(models["other"] / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or set-aside siblings left


def test_failed_init_leaves_nothing_behind(tmp_path):
    with pytest.raises(MissingPathError):
        init_model(tmp_path / "m", "tiny-1m", tokenizer=tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="needs texts"):
        init_model(tmp_path / "m", "tiny-1m")
    assert list(tmp_path.iterdir()) == []


# ---- loading -------------------------------------------------------------------------------


def test_load_model_eval_by_default_and_train_when_asked(models):
    model = load_model(models["teacher"], device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert load_model(models["teacher"], dtype="bf16", device="cpu", for_training=True).training


def test_resolve_dtype_and_device():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ConfigError, match="did you mean 'float16'"):
        resolve_dtype("float61")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")


def test_missing_path_is_one_line_and_a_file_not_found_error(tmp_path, monkeypatch):
    with pytest.raises(MissingPathError) as exc:
        load_model(tmp_path / "nope")
    assert isinstance(exc.value, FileNotFoundError) and "does not exist" in one_line(exc)
    # "runs/student" looks like a hub id, but runs/ exists here: it is a mistyped local path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(MissingPathError):
        locate("runs/student")
    with pytest.raises(MissingPathError):
        locate("a/b/c")
    assert locate("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"  # a hub id is passed on, not fetched here


def test_directory_without_weights_is_refused(models, tmp_path):
    shutil.copy(models["teacher"] / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError) as exc:
        load_model(tmp_path)
    assert f"model directory {tmp_path} has no weights (model.safetensors)" in one_line(exc)


def test_pickle_weights_are_refused_unless_allowed(models, tmp_path):
    shutil.copy(models["teacher"] / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ModelError) as exc:
        load_model(tmp_path)
    assert "pickle" in one_line(exc) and "allow_pickle" in one_line(exc)


def test_unknown_model_type_is_refused(models, tmp_path):
    shutil.copytree(models["teacher"], tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "qwen99"}))
    with pytest.raises(ModelError) as exc:
        load_model(tmp_path / "m")
    assert "model type 'qwen99'" in one_line(exc) and "trust_remote_code" in one_line(exc)


def test_load_tokenizer_refuses_a_directory_without_tokenizer_files(tmp_path):
    with pytest.raises(ModelError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


# ---- check_same_vocab ----------------------------------------------------------------------


def _swapped(tok, a: str, b: str):
    """The same tokenizer with the ids of tokens ``a`` and ``b`` exchanged."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    core = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=tok.eos_token, pad_token=tok.pad_token)


def test_check_same_vocab_names_the_first_differing_id(models):
    tok = load_tokenizer(models["teacher"])
    one, two = tok.convert_tokens_to_ids(["1", "2"])
    assert two == one + 1
    other = _swapped(tok, "1", "2")
    with pytest.raises(ModelError) as exc:
        check_same_vocab(tok, other)
    assert f"tokenizers differ at id {one}: '1' vs '2'" in one_line(exc)
    with pytest.raises(ModelError, match=f"at id {two}: '2' vs '1'"):
        check_same_vocab(tok, other, ids=[0, two, one])  # first in the order given
    check_same_vocab(tok, other, ids=[0, 5, 6])  # ids that agree pass
    check_same_vocab(tok, tok, ids=torch.tensor([0, one, 10_000]))  # unknown to both: equal


def test_check_same_vocab_compares_size_and_special_tokens(models):
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(models["teacher"])
    with pytest.raises(ModelError, match="sizes differ"):
        check_same_vocab(tok, train_tokenizer(TEXTS + ["a new vocabulary altogether"]))
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=EOS_TOKEN)
    with pytest.raises(ModelError, match="pad tokens differ"):
        check_same_vocab(tok, no_pad)


# ---- identity ------------------------------------------------------------------------------


def test_model_identity_hashes_are_stable_and_shared_by_twins(models):
    a, b = model_identity(models["teacher"]), model_identity(models["teacher"])
    assert a == b and a["path"] == str(models["teacher"].resolve())
    assert a["weights_hash"] == sha256(models["teacher"] / "model.safetensors")
    assert a["tokenizer_hash"] == sha256(models["teacher"] / "tokenizer.json")
    twin, other = model_identity(models["twin"]), model_identity(models["other"])
    assert {k: twin[k] for k in ("config_hash", "weights_hash", "tokenizer_hash")} == {
        k: a[k] for k in ("config_hash", "weights_hash", "tokenizer_hash")
    }
    assert other["weights_hash"] != a["weights_hash"] and other["config_hash"] == a["config_hash"]


def test_weights_hash_cache_is_used_until_the_file_changes(models, tmp_path, monkeypatch):
    monkeypatch.setenv("RLADCTL_CACHE", str(tmp_path / "cache"))
    path = shutil.copytree(models["teacher"], tmp_path / "m")
    true_hash = model_identity(path)["weights_hash"]
    cache_file = hash_cache_file(path)
    assert cache_file.is_relative_to(tmp_path / "cache") and sorted(p.name for p in path.iterdir()) == sorted(
        p.name for p in models["teacher"].iterdir()
    )
    cache = json.loads(cache_file.read_text())
    cache["model.safetensors"]["sha256"] = "cached"
    cache_file.write_text(json.dumps(cache))
    assert model_identity(path)["weights_hash"] == "cached"  # served from the cache, not rehashed
    weights = path / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert model_identity(path)["weights_hash"] == true_hash  # new mtime: hashed again
    assert json.loads(cache_file.read_text())["model.safetensors"]["sha256"] == true_hash


def test_an_unwritable_cache_only_costs_the_rehash(models, tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("RLADCTL_CACHE", str(blocker))
    path = shutil.copytree(models["teacher"], tmp_path / "m")
    assert model_identity(path)["weights_hash"] == sha256(path / "model.safetensors")
    assert model_identity(path)["weights_hash"] == sha256(path / "model.safetensors")


def test_hub_identity_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    identity = model_identity("some-org/not-cached-model")
    assert identity["path"] == "some-org/not-cached-model"
    assert identity["weights_hash"] is None and identity["revision"] is None


def hub_cache_with(model_dir: Path, cache: Path, repo_id: str) -> None:
    """The layout huggingface_hub reads: models--ORG--NAME/{refs/main, snapshots/REVISION/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")


def test_an_unreachable_hub_loads_cached_models_and_refuses_missing_ones_at_once(models, tmp_path):
    """Without this, every hub file request retried for about 50 s before failing or using the cache."""
    import subprocess
    import sys

    hub_cache_with(models["student"], tmp_path / "hub", "org/tiny")
    # A reserved .invalid host (RFC 6761): the connection fails as on a machine with no network.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") and "proxy" not in k.lower()
    }
    env.update(HF_ENDPOINT="http://hub.invalid", HF_HUB_CACHE=str(tmp_path / "hub"), RLADCTL_QUIET="1")
    code = (
        "from rladctl.models.identity import model_identity\nfrom rladctl.models.loading import load_model\nfrom rladctl.models.tokenizer import load_tokenizer\n"
        "tok = load_tokenizer('org/tiny'); model = load_model('org/tiny', device='cpu')\n"
        "print(len(tok), type(model).__name__, model_identity('org/tiny')['revision'])\n"
        "load_model('org/not-cached')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split() == [str(len(load_tokenizer(models["student"]))), "Qwen3ForCausalLM", "0123abcd"], (
        done.stderr
    )
    assert "Retry" not in done.stderr
    assert (
        "org/not-cached is not (completely) in the local hub cache" in done.stderr
        and "hf download org/not-cached" in done.stderr
    )


# ---- depth pruning (the demo's student) ----------------------------------------------------


def test_shrink_keeps_the_chosen_layers_and_everything_else_of_the_teacher(models, tmp_path):
    from rladctl.models.factory import shrink_model

    student = load_model(shrink_model(models["teacher"], tmp_path / "cut", [0, 3]), dtype="float32", device="cpu")
    teacher = load_model(models["teacher"], dtype="float32", device="cpu")
    assert student.config.num_hidden_layers == 2
    want, got = teacher.state_dict(), student.state_dict()
    for key, value in got.items():
        source = key.replace(".layers.1.", ".layers.3.")  # kept layer 3 is the student's layer 1
        assert torch.equal(value, want[source]), key
    assert sha256(tmp_path / "cut" / "tokenizer.json") == sha256(models["teacher"] / "tokenizer.json")
    # Layers 0 and 3 of the teacher, run alone, are the student's forward pass.
    ids = torch.tensor([[1, 5, 9, 4]])
    with torch.no_grad():
        teacher.model.layers = torch.nn.ModuleList([teacher.model.layers[0], teacher.model.layers[3]])
        teacher.config.num_hidden_layers = 2
        assert torch.allclose(student(ids, use_cache=False).logits, teacher(ids, use_cache=False).logits, atol=1e-6)


def test_shrink_refuses_layers_the_teacher_does_not_have(models, tmp_path):
    from rladctl.models.factory import shrink_model

    with pytest.raises(ConfigError) as exc:
        shrink_model(models["teacher"], tmp_path / "cut", [0, 4])
    assert "[0, 4)" in one_line(exc) and not (tmp_path / "cut").exists()
