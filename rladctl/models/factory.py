"""Model factory: Qwen3-shaped size presets, deterministic local init, depth-pruned students.

Nothing here downloads anything. torch and transformers are imported inside functions so that
``PRESETS`` and ``count_params`` answer without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rladctl.errors import ConfigError, ModelError, close_matches
from rladctl.models.hub import locate
from rladctl.models.loading import load_model
from rladctl.models.tokenizer import (
    copy_tokenizer_files,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from rladctl.store.files import writing

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# Qwen3Config kwargs. Tiny presets get vocab_size from their tokenizer; the qwen3-* shapes keep the
# real 151936 rows (padded past the tokenizer) and are only ever built on a GPU, for benchmarks.
_TINY = dict(max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6)


_QWEN3 = dict(max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6, vocab_size=151936)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny-1m": dict(_TINY, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, intermediate_size=384),
    "tiny-4m": dict(_TINY, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, intermediate_size=1024),
    "tiny-10m": dict(_TINY, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                     num_key_value_heads=2, head_dim=64, intermediate_size=1024),
    "tiny-50m": dict(_TINY, hidden_size=512, num_hidden_layers=12, num_attention_heads=8,
                     num_key_value_heads=4, head_dim=64, intermediate_size=2176),
    "qwen3-0.6b": dict(_QWEN3, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, intermediate_size=3072,
                       tie_word_embeddings=True),
    "qwen3-8b": dict(_QWEN3, hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, intermediate_size=12288,
                     tie_word_embeddings=False),
}  # fmt: skip


def preset_config(preset: str) -> dict[str, Any]:
    """A copy of the preset's Qwen3Config kwargs; unknown names list the valid ones."""
    if preset not in PRESETS:
        hint = close_matches(preset, PRESETS) or f"choose one of {', '.join(PRESETS)}"
        raise ConfigError(f"unknown model preset '{preset}'", "in --preset", hint)
    return dict(PRESETS[preset])


def count_params(preset: str, vocab_size: int | None = None) -> int:
    """Parameters of the preset's Qwen3ForCausalLM, computed without building it.

    Per layer: q/o projections 2*H*(n_heads*d), k/v 2*H*(n_kv*d), q_norm + k_norm 2*d,
    SwiGLU MLP 3*H*I, two RMSNorms 2*H. Plus embedding V*H, final norm H, and an lm_head V*H when
    untied. ``vocab_size`` defaults to the preset's own (the qwen3-* shapes have one).
    """
    cfg = preset_config(preset)
    vocab = vocab_size if vocab_size is not None else cfg.get("vocab_size")
    if vocab is None:
        raise ConfigError(f"preset '{preset}' takes its vocabulary from the tokenizer", fix="pass vocab_size")
    h, d, inter = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q_dim, kv_dim = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    attention = 2 * h * q_dim + 2 * h * kv_dim + 2 * d
    layer = attention + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if cfg["tie_word_embeddings"] else 2)
    return cfg["num_hidden_layers"] * layer + embeddings + h


def init_model(
    out_dir: str | Path,
    preset: str,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    texts: list[str] | None = None,
    vocab_size: int = 512,
    seed: int = 0,
    overwrite: bool = False,
    tokenizer_kind: str = "bpe",
) -> Path:
    """Write a random-init model of ``preset`` to ``out_dir``; returns the directory.

    The tokenizer is trained on ``texts`` or reused from ``tokenizer`` (a model directory, hub id
    or tokenizer object; a directory's files are copied byte for byte so teacher and student share
    ONE tokenizer). Same inputs and seed give byte-identical files. The directory is built in a
    temporary sibling and renamed into place, so a crash never leaves a half-written model.
    """
    out_dir = Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    cfg = preset_config(preset)
    if tokenizer is None and not texts:
        raise ConfigError("init_model needs texts to train a tokenizer or a tokenizer to reuse",
                          fix="pass --task (texts) or --tokenizer-from MODEL_DIR")  # fmt: skip
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out_dir):
            tmp.mkdir(parents=True)
            tok = _write_tokenizer(tmp, tokenizer, texts, vocab_size, tokenizer_kind)
            model = _build_model(cfg, tok, seed)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model.save_pretrained(str(tmp), **_safe_serialization_kwargs())
            _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _refuse_existing(out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_file():
        raise ModelError(f"output path {out_dir} is a file", fix="choose a directory path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError(f"output directory {out_dir} already exists and is not empty",
                         fix="pass --overwrite to replace it, or choose another directory")  # fmt: skip


def _write_tokenizer(tmp: Path, source, texts, vocab_size: int, kind: str) -> PreTrainedTokenizerBase:
    """Put the tokenizer files in ``tmp`` and return the tokenizer as loaded back from them."""
    if source is None:
        save_tokenizer(train_tokenizer(list(texts), vocab_size=vocab_size, kind=kind), tmp)
    elif isinstance(source, (str, Path)):
        located = locate(source)
        if isinstance(located, Path):
            load_tokenizer(located)  # refuses a directory without a usable tokenizer
            copy_tokenizer_files(located, tmp)
        else:
            save_tokenizer(load_tokenizer(located), tmp)
    else:
        save_tokenizer(source, tmp)
    return load_tokenizer(tmp)


def _build_model(cfg: dict[str, Any], tok: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if tok.eos_token_id is None:
        raise ModelError("the tokenizer has no eos token", fix="use a tokenizer that defines eos_token")
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos  # Qwen3 convention
    # A qwen3-* shape keeps its padded 151936 rows; a tiny preset gets exactly the tokenizer's ids.
    cfg["vocab_size"] = max(len(tok), cfg.get("vocab_size", 0))
    config = Qwen3Config(**cfg, eos_token_id=eos, pad_token_id=pad, bos_token_id=bos)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return model


def _safe_serialization_kwargs() -> dict[str, Any]:
    """transformers 5 always writes safetensors and has no such flag; 4.x needs it spelled out."""
    import transformers

    return {} if int(transformers.__version__.split(".")[0]) >= 5 else {"safe_serialization": True}


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is set aside first, then deleted."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def shrink_model(src: str | Path, out_dir: str | Path, keep_layers: list[int], overwrite: bool = False) -> Path:
    """A smaller student cut FROM a teacher (Minitron-style depth pruning): keep ``keep_layers``.

    Embeddings, norms, head and the kept decoder layers are copied unchanged, so the student starts
    in the teacher's representation (its mistakes are near-misses the teacher can correct); heal it
    briefly afterwards (``rladctl warmup``). The tokenizer files are copied byte for byte.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from rladctl.models.tokenizer import copy_tokenizer_files

    src, out_dir = Path(src), Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    teacher = load_model(src, dtype="float32", device="cpu")
    layers = teacher.config.num_hidden_layers
    if (
        not keep_layers
        or sorted(set(keep_layers)) != sorted(keep_layers)
        or not all(0 <= i < layers for i in keep_layers)
    ):
        raise ConfigError(
            f"keep_layers {keep_layers} must be distinct layer indices in [0, {layers})",
            "in --keep-layers",
            "e.g. --keep-layers 0,3",
        )
    config = AutoConfig.from_pretrained(src)
    config.num_hidden_layers = len(keep_layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep_layers]
    student = AutoModelForCausalLM.from_config(config)
    rename = {f".layers.{old}.": f".layers.{new}." for new, old in enumerate(keep_layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        if ".layers." not in key:
            state[key] = value
            continue
        for old, new in rename.items():
            if old in key:
                state[key.replace(old, new)] = value
    student.load_state_dict(state, strict=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out_dir):
            tmp.mkdir(parents=True)
            copy_tokenizer_files(src, tmp)
            student.generation_config = teacher.generation_config
            student.save_pretrained(str(tmp), **_safe_serialization_kwargs())
            _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
