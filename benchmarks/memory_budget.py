"""How GPU memory divides in one iteration of `rladctl run` on one GPU, computed from the models'
shapes (the Qwen3 configs in rladctl/models/factory.py), not measured.

    python benchmarks/memory_budget.py                       # Qwen3-0.6B student, Qwen3-8B teacher
    python benchmarks/memory_budget.py --new-tokens 8192 --train-micro-batch-tokens 65536 --checkpointing

Assumptions (each a flag):
- the hf backend everywhere and `run.keep_models` on, so the teacher (bfloat16), the student's
  float32 weights and AdamW state, and its bfloat16 sampling copy stay on the GPU the whole run;
- train holds float32 weights, float32 gradients (freed after each update) and AdamW's two float32
  moments, and runs bfloat16 autocast (train.dtype = "auto" on CUDA);
- rollout: batch_size sequences sampled at once, each prompt + new tokens long, with a bfloat16 KV
  cache of 2 * layers * kv_heads * head_dim * 2 bytes per token (keys and values);
- saved activations per token and decoder layer, under autocast: the two RMSNorm inputs and
  q_norm / k_norm inputs in float32, the linear layers' inputs, q and k after rotary, SDPA's
  q, repeated k, v and output, and the MLP's gate, up, SiLU(gate) and product in bfloat16 (the
  list is in ``layer_activation_bytes``); with gradient checkpointing, each layer's float32 input
  plus one layer's activations. A forward without grad (scoring) holds about one layer's
  activations at a time;
- log-probs in chunks of chunk_tokens positions: a float32 [chunk x vocab] buffer, three of them
  live in train's backward (logits, log-softmax, its gradient), one in scoring;
- CUDA context, allocator fragmentation and NCCL buffers are not counted (add 1-3 GB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GiB = 1024**3
FP32, BF16 = 4, 2


def shapes(preset: str) -> dict:
    from rladctl.models.factory import count_params, preset_config

    cfg = preset_config(preset)
    return {
        "params": count_params(preset),
        "layers": cfg["num_hidden_layers"],
        "h": cfg["hidden_size"],
        "q": cfg["num_attention_heads"] * cfg["head_dim"],
        "kv": cfg["num_key_value_heads"] * cfg["head_dim"],
        "I": cfg["intermediate_size"],
        "V": cfg["vocab_size"],
    }


def kv_bytes_per_token(preset: str) -> int:
    from rladctl.models.factory import preset_config

    cfg = preset_config(preset)
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * BF16


def layer_activation_bytes(s: dict) -> int:
    """Bytes saved for backward per token in one decoder layer under bfloat16 autocast."""
    h, q, kv, inter = s["h"], s["q"], s["kv"], s["I"]
    fp32 = 2 * h + q + kv  # input_layernorm and post_attention_layernorm inputs; q_norm and k_norm inputs
    bf16 = (
        h  # the normed input of q/k/v_proj (one tensor, shared)
        + q
        + kv  # q and k after rotary
        + q
        + 2 * q  # SDPA: q, k and v repeated to every query head
        + q  # SDPA output = o_proj input
        + h  # the normed input of gate/up_proj
        + 4 * inter  # gate, up, SiLU(gate), and their product = down_proj input
    )
    return FP32 * fp32 + BF16 * bf16


def budget(args) -> list[tuple[str, float, str]]:
    s, t = shapes(args.student), shapes(args.teacher)
    seq = args.prompt_tokens + args.new_tokens
    rows = args.prompts * args.group
    train_tokens = min(args.train_micro_batch_tokens, rows * seq)
    score_tokens = min(args.score_micro_batch_tokens, rows * seq)
    per_layer = layer_activation_bytes(s)
    if args.checkpointing:
        activations = s["layers"] * train_tokens * s["h"] * FP32 + train_tokens * per_layer
    else:
        activations = s["layers"] * train_tokens * per_layer
    chunk = min(args.chunk_tokens, train_tokens)
    score_layer = score_tokens * (2 * t["h"] + 3 * t["I"]) * BF16  # hidden in/out, gate, up, product
    decode_layer = args.batch_size * (2 * s["h"] + 3 * s["I"]) * BF16 + args.batch_size * s["V"] * FP32
    return [
        ("resident", s["params"] * FP32, "student weights, float32 (train's, kept)"),
        ("resident", s["params"] * 2 * FP32, "student AdamW state: 2 moments, float32"),
        ("resident", s["params"] * BF16, "student sampling copy, bfloat16"),
        ("resident", t["params"] * BF16, "teacher weights, bfloat16"),
        ("rollout", args.batch_size * seq * kv_bytes_per_token(args.student), f"student KV cache, {args.batch_size} x {seq} tokens"),
        ("rollout", decode_layer, "one decode step's activations and float32 logits"),
        ("score", score_layer, f"teacher forward, one layer live, {score_tokens} tokens"),
        ("score", min(args.chunk_tokens, score_tokens) * t["V"] * FP32, "teacher log-prob chunk, float32"),
        ("train", s["params"] * FP32, "student gradients, float32"),
        ("train", activations, f"saved activations, {train_tokens} tokens per micro-batch"
                               + (", checkpointed" if args.checkpointing else "")),
        ("train", 3 * chunk * s["V"] * FP32, "log-prob chunk: logits, log-softmax, gradient, float32"),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", default="qwen3-0.6b")
    ap.add_argument("--teacher", default="qwen3-8b")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=256, help="K&K prompts with the chat template: ~200-300")
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64, help="rollout.batch_size: sequences per generate call")
    ap.add_argument("--train-micro-batch-tokens", type=int, default=8192)
    ap.add_argument("--score-micro-batch-tokens", type=int, default=16384)
    ap.add_argument("--chunk-tokens", type=int, default=1024)
    ap.add_argument("--checkpointing", action="store_true", help="train.gradient_checkpointing")
    args = ap.parse_args()
    rows = budget(args)
    s, t = shapes(args.student), shapes(args.teacher)
    print(
        f"{args.student} ({s['params'] / 1e9:.3f} B parameters) student, {args.teacher} ({t['params'] / 1e9:.3f} B) "
        f"teacher; {args.prompts} prompts x G = {args.group}, {args.prompt_tokens} + {args.new_tokens} tokens"
    )
    print(f"{'phase':<10}{'GiB':>8}  what")
    for phase, size, what in rows:
        print(f"{phase:<10}{size / GiB:>8.2f}  {what}")
    resident = sum(b for p, b, _ in rows if p == "resident")
    phases = {p: sum(b for q, b, _ in rows if q == p) for p in ("rollout", "score", "train")}
    for p, b in phases.items():
        print(f"{'peak in ' + p:<18}{(resident + b) / GiB:>8.2f} GiB (resident {resident / GiB:.2f} + {b / GiB:.2f})")
    worst = max(phases, key=phases.get)
    print(f"peak of the iteration: {(resident + phases[worst]) / GiB:.2f} GiB, in {worst}")


if __name__ == "__main__":
    main()
