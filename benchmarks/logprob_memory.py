"""Peak host memory of sampled-token log-probs WITH gradients: naive full log_softmax vs lm_head_logprobs.

    python benchmarks/logprob_memory.py [--tokens 4096] [--vocab 151936] [--hidden 64] [--max-ratio 0.15]

What the train stage needs per micro-batch: the log-prob of each sampled token, then a backward pass
to the final hidden states h [T, H] and to the LM-head weight W [V, H]. Each path runs in its own
fresh subprocess, on CPU, in float32, on the same random h, W and target ids (Qwen3's vocabulary of
151,936 ids, a tiny hidden size: the [tokens x vocab] tensors are what this measures):

    naive    logits = h @ W.T -> log_softmax over the whole vocabulary -> gather -> sum().backward()
    rladctl  rladctl.backends.logprobs.lm_head_logprobs(h, W, targets).sum().backward() (token x vocab chunks,
             online logsumexp in float32, a backward that recomputes each logits chunk)

"extra" is the process's peak RSS during forward + backward minus its RSS just before (the peak is
reset after a short warm-up of the same path). The two paths' log-probs and gradients are compared,
so a path that computes something else cannot pass.
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="sampled tokens (rows of h)")
    parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary size (Qwen3's by default)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size")
    parser.add_argument(
        "--max-ratio", type=float, default=0.15, help="fail when rladctl extra / naive extra exceeds this"
    )
    parser.add_argument("--summary", help="also write the result as JSON here (for benchmarks/run_all.py)")
    parser.add_argument("--path", choices=("naive", "rladctl"), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--save", help=argparse.SUPPRESS)  # child: where to write log-probs and grads
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# child: one path, one process


def naive_path(h_TH, w_VH, targets_T):
    import torch

    logits_TV = h_TH @ w_VH.T  # [T, V]
    logp_TV = torch.log_softmax(logits_TV, dim=-1)  # [T, V]
    return logp_TV.gather(-1, targets_T[:, None]).squeeze(-1)  # [T]


def rladctl_path(h_TH, w_VH, targets_T):
    from rladctl.backends.logprobs import lm_head_logprobs

    return lm_head_logprobs(h_TH, w_VH, targets_T)


def inputs(tokens: int, vocab: int, hidden: int):
    """Leaf h [T, H] and W [V, H] (both require grad) and target ids [T], the same in every process."""
    import torch

    gen = torch.Generator().manual_seed(0)
    h_TH = torch.randn(tokens, hidden, generator=gen).requires_grad_()
    w_VH = (torch.randn(vocab, hidden, generator=gen) * hidden**-0.5).requires_grad_()
    return h_TH, w_VH, torch.randint(0, vocab, (tokens,), generator=gen)


def forward_backward(path, h_TH, w_VH, targets_T):
    h_TH.grad = w_VH.grad = None
    logp_T = path(h_TH, w_VH, targets_T)
    logp_T.sum().backward()
    return logp_T.detach()


def run_child(args: argparse.Namespace) -> None:
    import numpy as np

    path = {"naive": naive_path, "rladctl": rladctl_path}[args.path]
    h_TH, w_VH, targets_T = inputs(args.tokens, args.vocab, args.hidden)
    forward_backward(path, h_TH[:8].detach().requires_grad_(), w_VH, targets_T[:8])  # warm-up: kernels, thread pools
    w_VH.grad = None
    gc.collect()
    exact = reset_peak()
    before = rss_mib("VmRSS")
    started = time.perf_counter()
    logp_T = forward_backward(path, h_TH, w_VH, targets_T)
    seconds = time.perf_counter() - started
    peak = peak_mib(exact)
    np.savez(args.save, logp=logp_T.numpy(), grad_h=h_TH.grad.numpy(), grad_w=w_VH.grad.numpy())
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

    with tempfile.TemporaryDirectory() as tmp:
        rows = {p: measure_in_child(__file__, p, args, Path(tmp) / f"{p}.npz") for p in ("naive", "rladctl")}
        naive, ours = np.load(Path(tmp) / "naive.npz"), np.load(Path(tmp) / "rladctl.npz")
        diff = {k: float(np.abs(naive[k] - ours[k]).max()) for k in ("logp", "grad_h", "grad_w")}
    full_gib = args.tokens * args.vocab * 4 / 2**30
    print(
        f"log-probs of {args.tokens} sampled tokens + backward to h [{args.tokens} x {args.hidden}] and W [{args.vocab:,} x {args.hidden}], "
        f"float32 on CPU; one [T x V] float32 tensor = {full_gib:.2f} GiB"
    )
    print("rladctl: lm_head_logprobs defaults chunk_tokens=1024, chunk_vocab=32768")
    ratio = memory_table(rows, "setup")
    ok = ratio <= args.max_ratio
    print(
        f"max |naive - rladctl|: log-prob {diff['logp']:.2e}, grad h {diff['grad_h']:.2e}, grad W {diff['grad_w']:.2e}"
    )
    print(f"rladctl extra / naive extra = {ratio:.3f} (limit {args.max_ratio}): {'ok' if ok else 'FAIL'}")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(
                {
                    "benchmark": f"log-prob + backward memory, {args.tokens} tok x {args.vocab:,} vocab",
                    "rladctl": f"{rows['rladctl']['extra_mib']:,.0f} MiB",
                    "baseline": f"{rows['naive']['extra_mib']:,.0f} MiB (naive)",
                    "ratio": f"{ratio:.3f}",
                    "target": f"<= {args.max_ratio}",
                    "ok": ok,
                },
                f,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
