"""A tiny Llama GGUF written here, the way llama.cpp's converter writes one, so GGUF import is tested without a download.

``write_tiny_gguf(dir)`` trains a byte-level BPE tokenizer with chat tokens, builds a random
LlamaForCausalLM over it, saves that as a Hugging Face directory (the reference) and writes the same
model as ``tiny.gguf`` with the ``gguf`` package: float32 tensors under llama.cpp's names, q/k rows
permuted as llama.cpp does, and the tokenizer as GGUF metadata (tokens, types, merges, special ids,
chat template).
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2: pad, bos, eos (as SmolLM2)
TEXTS = [f"{a} + {b} = {a + b}. The quick brown fox jumps over the lazy dog." for a in range(40) for b in range(5)]
SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)


def write_tiny_gguf(root: Path, tie_word_embeddings: bool = False) -> tuple[Path, Path]:
    """(path of tiny.gguf, Hugging Face directory of the same model and tokenizer)."""
    tok = _train_tokenizer()
    model = _build_model(tok, tie_word_embeddings)
    hf_dir = root / "reference"
    model.save_pretrained(str(hf_dir))
    tok.save_pretrained(str(hf_dir))
    path = root / "tiny.gguf"
    _write(path, model, tok)
    return path, hf_dir


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split, as GGUF's "gpt2" model
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,  # the corpus is small: training stops at 369
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(TEXTS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL[0],
        bos_token=SPECIAL[1],
        eos_token=SPECIAL[2],
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tok, tie_word_embeddings: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **SHAPE,
        vocab_size=len(tok),
        max_position_embeddings=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        for param in model.parameters():  # norms start at 1; make them matter
            param.data.add_(0.05 * torch.randn_like(param))
    return model.eval()


def _permute(w, n_head: int):
    """llama.cpp's reordering of q/k rows (its rotary pairs adjacent dims; HF's pairs halves)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write(path: Path, model, tok) -> None:
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_tokenizer(writer, tok)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        writer.add_tensor(names.get_name(key, try_suffixes=(".weight",)), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_tokenizer(writer, tok) -> None:
    import gguf

    spec = json.loads(tok.backend_tokenizer.to_str())["model"]
    vocab = spec["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    types = [gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in tokens]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_pad_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
