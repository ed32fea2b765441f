"""Tokenizers: train a tiny one locally, load one safely, check two share a vocabulary.

Teacher and student must map every token id to the same string, or the token-level log-ratio
log pi_teacher(y_t) - log pi_student(y_t) compares different tokens (DESIGN.md section 5).
``check_same_vocab`` is score-teacher's pre-flight check for that.

torch and transformers are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rladctl.errors import ConfigError, ModelError, first_line
from rladctl.models.hub import hub_fix, locate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"  # eos and pad, as in Qwen3 base models
# Plain (not special) added tokens: each is always one id, and decode(skip_special_tokens=True)
# keeps it, so answer extraction sees the same text the reward sees.
MARKUP_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
TOKENIZER_KINDS = ("bpe", "char")
# Every file a Hugging Face tokenizer may be stored in; copied byte for byte when reused.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# Written as tokenizer_class so that transformers 4.x (and vLLM pinned to it) loads the files too;
# transformers 5 maps the name to its TokenizersBackend.
_PORTABLE_CLASS = "PreTrainedTokenizerFast"
_N_BYTES = 256


def train_tokenizer(texts: list[str], vocab_size: int = 512, kind: str = "bpe") -> PreTrainedTokenizerFast:
    """Train a deterministic tokenizer on ``texts``: the same texts give byte-identical files.

    kind="bpe": byte-level BPE; digits are pre-split one per token so arithmetic stays learnable.
    kind="char": one token per character seen (most frequent first when ``vocab_size`` caps them),
    with byte fallback (<0x00>..<0xFF>) for anything unseen, so nothing maps to <unk>.
    Ids: 0 is <|endoftext|> (eos and pad); ``MARKUP_TOKENS`` take the last ids; len <= vocab_size.
    """
    from transformers import PreTrainedTokenizerFast

    if kind not in TOKENIZER_KINDS:
        raise ConfigError(f"unknown tokenizer kind '{kind}'", "in train_tokenizer", f"use one of {TOKENIZER_KINDS}")
    texts = [t for t in texts if t]
    if not texts:
        raise ConfigError("no texts to train a tokenizer on", "in train_tokenizer", "pass texts")
    n_reserved = 1 + len(MARKUP_TOKENS) + _N_BYTES
    if vocab_size < n_reserved:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small for a {kind} tokenizer",
            "in train_tokenizer",
            f"use at least {n_reserved} (256 bytes, {EOS_TOKEN} and {len(MARKUP_TOKENS)} markup tokens)",
        )
    core_size = vocab_size - len(MARKUP_TOKENS)
    core = _train_bpe(texts, core_size) if kind == "bpe" else _build_char(texts, core_size)
    _add_markup(core)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


def _train_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return core


def _build_char(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models

    vocab = {EOS_TOKEN: 0}
    for b in range(_N_BYTES):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    counts = Counter(ch for text in texts for ch in text)
    n_chars = vocab_size - len(vocab)
    # Ties broken by the character itself so the kept set does not depend on text order.
    kept = sorted(counts, key=lambda ch: (-counts[ch], ch))[:n_chars]
    for ch in sorted(kept):
        vocab.setdefault(ch, len(vocab))
    # No merges and no pre-tokenizer: BPE then emits one token per known character.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    core.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return core


def _add_markup(core) -> None:
    from tokenizers import AddedToken

    core.add_tokens([AddedToken(t, normalized=False, special=False) for t in MARKUP_TOKENS])


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> None:
    """save_pretrained, then make tokenizer_config.json portable and free of load-time noise."""
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # transformers 5 records how this copy was loaded; that is not a property of the tokenizer.
    for key in ("is_local", "local_files_only", "name_or_path"):
        config.pop(key, None)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = _PORTABLE_CLASS
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def copy_tokenizer_files(src_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Copy a tokenizer's files byte for byte (so two models share ONE tokenizer); returns names."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    names = [n for n in TOKENIZER_FILES if (src_dir / n).is_file()]
    for name in names:
        shutil.copyfile(src_dir / name, out_dir / name)
    return names


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or a hub id, refusing what cannot be loaded. Inside
    ``resident.keep_models()`` (one `rladctl run`) a directory's tokenizer is loaded once."""
    from rladctl.resident import active

    source = locate(path)
    kept = active()
    if kept is not None and isinstance(source, Path) and source.is_dir():  # inside one `rladctl run`
        return kept.tokenizer(
            source, TOKENIZER_FILES, trust_remote_code, lambda: _load_tokenizer(source, trust_remote_code)
        )
    return _load_tokenizer(source, trust_remote_code)


def _load_tokenizer(source, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    if isinstance(source, Path):
        if not any((source / n).is_file() for n in TOKENIZER_FILES):
            raise ModelError(
                f"directory {source} has no tokenizer files (tokenizer.json)",
                fix="point at a model directory written by 'rladctl init-model' or save_pretrained",
            )
    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load a tokenizer from {source}: {first_line(exc)}",
            fix=hub_fix(source, "check the path or hub id; set trust_remote_code only for code you trust"),
        ) from exc


def check_same_vocab(
    tok_a: PreTrainedTokenizerBase,
    tok_b: PreTrainedTokenizerBase,
    ids: Iterable[int] | None = None,
    where: str | None = None,
    fix: str = "score with a teacher that shares the student's tokenizer (init-model --tokenizer-from TEACHER_DIR)",
) -> None:
    """Raise ModelError unless both tokenizers agree on size, special tokens, chat template and
    the string of every id in ``ids`` (all ids when None).

    An id neither tokenizer knows (e.g. from an embedding padded past len(tokenizer)) counts as
    equal: both map it to nothing. ``where`` names the two models in the error (e.g. "between
    the student X and the teacher Y"); ``fix`` says what to do about it.
    """
    if len(tok_a) != len(tok_b):
        raise ModelError(f"tokenizer sizes differ: {len(tok_a)} vs {len(tok_b)} ids", where, fix)
    for role in ("eos", "pad", "bos"):
        a = (getattr(tok_a, f"{role}_token"), getattr(tok_a, f"{role}_token_id"))
        b = (getattr(tok_b, f"{role}_token"), getattr(tok_b, f"{role}_token_id"))
        if a != b:
            raise ModelError(f"{role} tokens differ: {a[0]!r} (id {a[1]}) vs {b[0]!r} (id {b[1]})", where, fix)
    if getattr(tok_a, "chat_template", None) != getattr(tok_b, "chat_template", None):
        raise ModelError("chat templates differ", where, fix)
    strings_a = {i: s for s, i in tok_a.get_vocab().items()}
    strings_b = {i: s for s, i in tok_b.get_vocab().items()}
    if strings_a == strings_b:
        return
    # dict.fromkeys: each id once, in the caller's order, so "first" means first as given.
    for i in sorted(strings_a.keys() | strings_b.keys()) if ids is None else dict.fromkeys(map(int, ids)):
        if strings_a.get(i) != strings_b.get(i):
            raise ModelError(f"tokenizers differ at id {i}: {strings_a.get(i)!r} vs {strings_b.get(i)!r}", where, fix)
