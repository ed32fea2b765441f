"""Which vLLM layout of `rladctl run` fits which model sizes: GPU memory per phase, computed.

The colocated layout (rladctl/engines.py): on every GPU (one process, or one torchrun rank per GPU)
the student's vLLM engine, the teacher's vLLM engine (TP = 1) and the trainer. Both engines are
awake while rollout and score-teacher run, each within its ``gpu_memory_utilization`` share of the
GPU; while train runs they sleep (the student drops its weights, the teacher offloads its own to
CPU memory, both drop their KV cache), so train has the GPU but for the engines' CUDA graphs and
contexts. Computed from the Qwen3 shapes below, not measured:

    python benchmarks/vllm_layouts.py                       # 80 GB GPU, the paper recipes' shares
    python benchmarks/vllm_layouts.py --gpu-gb 141 --student-share 0.35 --teacher-share 0.5

Assumptions, stated: bfloat16 engine weights; train keeps float32 weights, gradients and AdamW's two
moments (16 bytes per parameter) and, with gradient checkpointing, one bfloat16 hidden state per
layer and token of a micro-batch (65,536 tokens, the recipes'); each engine's CUDA graphs, context
and activations are taken as 2 GB (``--engine-fixed-gb``); sequences of 8,192 new + 256 prompt tokens.
"""

from __future__ import annotations

import argparse

# Qwen3 configs (Hugging Face config.json of each model): hidden, layers, heads, KV heads,
# head dim, MLP width, tied embeddings. Vocabulary 151,936.
SHAPES = {
    "Qwen3-0.6B": (1024, 28, 16, 8, 128, 3072, True),
    "Qwen3-1.7B": (2048, 28, 16, 8, 128, 6144, True),
    "Qwen3-4B": (2560, 36, 32, 8, 128, 9728, True),
    "Qwen3-8B": (4096, 36, 32, 8, 128, 12288, False),
    "Qwen3-14B": (5120, 40, 40, 8, 128, 17408, False),
    "Qwen3-32B": (5120, 64, 64, 8, 128, 25600, False),
}
VOCAB, GB = 151_936, 1e9


def params(name: str) -> int:
    h, layers, heads, kv, hd, mlp, tied = SHAPES[name]
    attention = h * heads * hd * 2 + h * kv * hd * 2 + 2 * hd  # q, o; k, v; q/k norms
    layer = attention + 3 * h * mlp + 2 * h
    return VOCAB * h * (1 if tied else 2) + layers * layer + h


def kv_bytes_per_token(name: str) -> int:
    _, layers, _, kv, hd, _, _ = SHAPES[name]
    return 2 * layers * kv * hd * 2  # keys and values, bfloat16


def layout(student: str, teacher: str, args) -> dict:
    gpu = args.gpu_gb * GB
    seq = args.new_tokens + args.prompt_tokens
    h, layers = SHAPES[student][0], SHAPES[student][1]
    train_state = 16 * params(student)
    activations = layers * args.micro_batch_tokens * h * 2
    asleep = 2 * args.engine_fixed_gb * GB  # what sleeping engines keep: graphs, contexts
    out = {"student": student, "teacher": teacher, "train": (train_state + activations + asleep) / GB}
    for role, model, share in (("student", student, args.student_share), ("teacher", teacher, args.teacher_share)):
        weights = 2 * params(model)
        kv = share * gpu - weights - args.engine_fixed_gb * GB
        out[f"{role}_weights"] = weights / GB
        out[f"{role}_kv"] = kv / GB
        out[f"{role}_seqs"] = max(kv, 0) / kv_bytes_per_token(model) / seq
    out["fits"] = out["train"] <= args.gpu_gb * 0.95 and out["student_kv"] > 0 and out["teacher_kv"] > 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu-gb", type=float, default=80.0)
    ap.add_argument("--student-share", type=float, default=0.3, help="rollout/eval gpu_memory_utilization")
    ap.add_argument("--teacher-share", type=float, default=0.55, help="score_teacher gpu_memory_utilization")
    ap.add_argument("--engine-fixed-gb", type=float, default=2.0)
    ap.add_argument("--micro-batch-tokens", type=int, default=65_536)
    ap.add_argument("--new-tokens", type=int, default=8192)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    args = ap.parse_args()
    pairs = [
        ("Qwen3-0.6B", "Qwen3-8B"),
        ("Qwen3-1.7B", "Qwen3-8B"),
        ("Qwen3-4B", "Qwen3-8B"),
        ("Qwen3-1.7B", "Qwen3-14B"),
        ("Qwen3-1.7B", "Qwen3-32B"),
    ]
    print(
        f"{args.gpu_gb:.0f} GB GPU, student share {args.student_share}, teacher share {args.teacher_share}, "
        f"{args.new_tokens + args.prompt_tokens}-token sequences; GB = 1e9 bytes"
    )
    print("parameters: " + ", ".join(f"{n} {params(n) / 1e9:.3f} B" for n in SHAPES))
    head = "student      teacher     train GB  student w/KV GB (seqs)   teacher w/KV GB (seqs)   colocated TP=1"
    print(head)
    for student, teacher in pairs:
        r = layout(student, teacher, args)
        print(
            f"{student:<12} {teacher:<11} {r['train']:>8.1f}  "
            f"{r['student_weights']:>5.1f} / {r['student_kv']:>5.1f} ({r['student_seqs']:>5.1f})   "
            f"{r['teacher_weights']:>5.1f} / {r['teacher_kv']:>5.1f} ({r['teacher_seqs']:>5.1f})   "
            f"{'fits' if r['fits'] else 'does not fit'}"
        )


if __name__ == "__main__":
    main()
