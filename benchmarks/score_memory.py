"""Peak host memory of scoring one long completion: naive full log_softmax vs rladctl's chunked path.

    python benchmarks/score_memory.py [--tokens 4096] [--vocab 151936] [--hidden 64] [--max-ratio 0.15]

Each path runs in its own fresh subprocess, on CPU, in float32, on the same randomly initialised
Qwen3-shaped model (Qwen3's vocabulary of 151,936 ids, a tiny hidden size: the [tokens x vocab]
tensors are what this measures) and the same token ids:

    naive    model(ids).logits -> log_softmax over the whole vocabulary -> gather the sampled ids
    rladctl  rladctl.backends.hf.score_rows with the default ScoreTeacherConfig (length
             buckets, backbone forward, lm_head_logprobs chunked over tokens and vocabulary)

"extra" is the process's peak RSS during scoring minus its RSS just before scoring. The peak is
reset right before (Linux: writing 5 to /proc/self/clear_refs resets VmHWM), after a short warm-up
of the same path, so neither model construction nor lazily loaded kernels count. The two paths'
log-probs are compared too, so a fast path that computes something else cannot pass.
Exit status 1 when rladctl's extra memory exceeds --max-ratio times the naive path's.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure_in_child, memory_table, peak_mib, reset_peak, rss_mib  # noqa: E402

PROMPT_TOKENS = 16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="completion tokens to score")
    parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary size (Qwen3's by default)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the random model")
    parser.add_argument(
        "--max-ratio", type=float, default=0.15, help="fail when rladctl extra / naive extra exceeds this"
    )
    parser.add_argument("--path", choices=("naive", "rladctl"), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--save", help=argparse.SUPPRESS)  # child: where to write the log-probs
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# child: one path, one process


def build_model(vocab: int, hidden: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=hidden // 2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config).eval()


def naive_path(model, prompt: list[int], completion: list[int]):
    import torch

    ids_1L = torch.tensor([prompt + completion[:-1]])
    logits_TV = model(ids_1L).logits[0, len(prompt) - 1 :].float()  # [T, V]
    logp_TV = torch.log_softmax(logits_TV, dim=-1)  # [T, V]
    return logp_TV.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)  # [T]


def rladctl_path(model, prompt: list[int], completion: list[int]):
    import torch

    from rladctl.backends.hf import score_rows
    from rladctl.config import ScoreTeacherConfig

    teacher, _ = score_rows(model, [prompt], [completion], ScoreTeacherConfig(), pad_id=0)
    return torch.tensor(teacher[0])


def run_child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    path = {"naive": naive_path, "rladctl": rladctl_path}[args.path]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, args.vocab, (PROMPT_TOKENS + args.tokens,), generator=gen).tolist()
    prompt, completion = ids[:PROMPT_TOKENS], ids[PROMPT_TOKENS:]
    model = build_model(args.vocab, args.hidden)
    with torch.inference_mode():
        path(model, prompt[:4], prompt[4:12])  # warm-up: load kernels, start thread pools
        gc.collect()
        exact = reset_peak()
        before = rss_mib("VmRSS")
        started = time.perf_counter()
        logp_T = path(model, prompt, completion)
        seconds = time.perf_counter() - started
    peak = peak_mib(exact)
    np.save(args.save, logp_T.numpy())
    print(
        json.dumps(
            {
                "path": args.path,
                "before_mib": before,
                "peak_mib": peak,
                "extra_mib": peak - before,
                "seconds": seconds,
                "peak_reset": exact,
            }
        )
    )


# --------------------------------------------------------------------------------------------
# parent: one subprocess per path, then the table


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.path:
        run_child(args)
        return 0
    import numpy as np

    from rladctl.config import ScoreTeacherConfig

    cfg = ScoreTeacherConfig()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {p: measure_in_child(__file__, p, args, Path(tmp) / f"{p}.npy") for p in ("naive", "rladctl")}
        diff = float(np.abs(np.load(Path(tmp) / "naive.npy") - np.load(Path(tmp) / "rladctl.npy")).max())
    full_gib = args.tokens * args.vocab * 4 / 2**30
    print(
        f"scoring {args.tokens} completion tokens (+{PROMPT_TOKENS} prompt), vocab {args.vocab:,}, hidden {args.hidden}, "
        f"float32 on CPU; one [T x V] float32 tensor = {full_gib:.2f} GiB"
    )
    print(
        f"rladctl: chunk_tokens={cfg.chunk_tokens}, chunk_vocab=32768 (lm_head_logprobs default), micro_batch_tokens={cfg.micro_batch_tokens}"
    )
    ratio = memory_table(rows, "model construction")
    ok = ratio <= args.max_ratio
    print(
        f"rladctl extra / naive extra = {ratio:.3f} (limit {args.max_ratio}): {'ok' if ok else 'FAIL'}; "
        f"max |naive - rladctl| log-prob = {diff:.2e}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
