"""score-teacher tokens/s on variable-length rollouts: rladctl's length buckets vs fixed padded batches.

    python benchmarks/score_packing.py [--prompts 8] [--group 8] [--batch-size 16] [--repeats 3]

Rollouts of an RL step are long-tailed: most completions stop early, a few run to max_new_tokens.
This builds P prompts x G completions whose lengths are drawn from a log-normal (median
--median-tokens, clipped to [--min-tokens, --max-tokens]; the clip puts the truncated completions at
the maximum, as a real sampler does), and scores them, in ONE process on ONE random-init tiny-10m
model (float32, CPU unless --device), two ways:

    naive    rows in rollout order, --batch-size rows per forward, right-padded to the longest row of
             the batch; model(ids).logits -> log_softmax -> gather (the usual HF scoring loop)
    rladctl  rladctl.backends.hf.score_rows with the default ScoreTeacherConfig: rows sorted
             by length and split into the micro-batches (at most micro_batch_tokens padded tokens
             each) that minimise padded tokens + a per-forward overhead (tight_length_buckets),
             backbone forward, chunked lm_head_logprobs

The two are interleaved (naive, rladctl, then rladctl, naive, ...) after one warm-up each; the
table shows medians. Tokens/s counts completion tokens (the ones scored). Exit status 1 when
rladctl's speed-up is below --min-speedup or the two disagree on a log-prob by more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-10m", help="rladctl.models preset of the teacher")
    parser.add_argument(
        "--vocab", type=int, default=512, help="vocabulary size (a tiny preset's tokenizer-sized vocabulary)"
    )
    parser.add_argument("--prompts", type=int, default=8, help="P prompts")
    parser.add_argument("--group", type=int, default=8, help="G completions per prompt")
    parser.add_argument(
        "--prompt-tokens", type=int, nargs=2, default=(32, 96), metavar=("MIN", "MAX"), help="prompt length range"
    )
    parser.add_argument("--median-tokens", type=int, default=160, help="median completion length")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of completion lengths (tail weight)")
    parser.add_argument("--min-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=1024, help="max_new_tokens: longer draws are truncated here")
    parser.add_argument("--batch-size", type=int, default=16, help="naive path: rows per padded batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--min-speedup", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", help="also write the result as JSON here (for benchmarks/run_all.py)")
    return parser.parse_args(argv)


def make_rows(args: argparse.Namespace) -> tuple[list[list[int]], list[list[int]]]:
    """P x G rows in rollout order (a group's G rows share one prompt); long-tailed completion lengths."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    prompts, completions = [], []
    for _ in range(args.prompts):
        prompt = rng.integers(1, args.vocab, rng.integers(args.prompt_tokens[0], args.prompt_tokens[1] + 1)).tolist()
        lengths = np.clip(
            np.round(args.median_tokens * rng.lognormal(0.0, args.sigma, args.group)), args.min_tokens, args.max_tokens
        )
        for n in lengths.astype(int):
            prompts.append(prompt)
            completions.append(rng.integers(1, args.vocab, n).tolist())
    return prompts, completions


def build_model(args: argparse.Namespace):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rladctl.models.factory import preset_config

    cfg = preset_config(args.preset)
    cfg["vocab_size"] = max(args.vocab, cfg.get("vocab_size", 0))
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(**cfg, eos_token_id=0, pad_token_id=0, bos_token_id=0)).to(args.device).eval()


def naive_scores(model, prompts, completions, batch_size: int) -> list[list[float]]:
    """Fixed batches in rollout order, right-padded to each batch's longest row, full log_softmax."""
    import torch

    out = []
    with torch.inference_mode():
        for b0 in range(0, len(prompts), batch_size):
            seqs = [p + c[:-1] for p, c in zip(prompts[b0 : b0 + batch_size], completions[b0 : b0 + batch_size])]
            width = max(len(s) for s in seqs)
            ids_BL = torch.zeros((len(seqs), width), dtype=torch.long)
            mask_BL = torch.zeros((len(seqs), width), dtype=torch.long)
            for b, s in enumerate(seqs):
                ids_BL[b, : len(s)], mask_BL[b, : len(s)] = torch.tensor(s), 1
            logits_BLV = model(input_ids=ids_BL.to(model.device), attention_mask=mask_BL.to(model.device)).logits
            logp_BLV = torch.log_softmax(logits_BLV.float(), dim=-1)
            for b, (p, c) in enumerate(zip(prompts[b0 : b0 + batch_size], completions[b0 : b0 + batch_size])):
                at = torch.arange(len(p) - 1, len(p) - 1 + len(c), device=model.device)
                out.append(logp_BLV[b, at, torch.tensor(c, device=model.device)].cpu().tolist())
    return out


def rladctl_scores(model, prompts, completions) -> list[list[float]]:
    from rladctl.backends.hf import score_rows
    from rladctl.config import ScoreTeacherConfig

    return score_rows(model, prompts, completions, ScoreTeacherConfig(), pad_id=0)[0]


def padded_tokens(prompts, completions, batches: list[list[int]]) -> int:
    return sum(len(b) * max(len(prompts[i]) + len(completions[i]) - 1 for i in b) for b in batches)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RLADCTL_QUIET", "1")
    import numpy as np
    import torch

    from rladctl.backends.logprobs import pass_overhead_tokens, tight_length_buckets
    from rladctl.config import ScoreTeacherConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts, completions = make_rows(args)
    model = build_model(args)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    paths = {
        "naive": lambda: naive_scores(model, prompts, completions, args.batch_size),
        "rladctl": lambda: rladctl_scores(model, prompts, completions),
    }

    def timed(name: str):
        sync()
        t0 = time.perf_counter()
        result = paths[name]()
        sync()
        return time.perf_counter() - t0, result

    results = {name: timed(name)[1] for name in paths}  # warm-up, and the values to compare
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(results["naive"], results["rladctl"]))
    times: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.repeats):
        for name in ("naive", "rladctl") if r % 2 == 0 else ("rladctl", "naive"):
            times[name].append(timed(name)[0])

    cfg = ScoreTeacherConfig()
    tokens = sum(len(c) for c in completions)
    lens = sorted(len(c) for c in completions)
    real = sum(len(p) + len(c) - 1 for p, c in zip(prompts, completions))
    fixed = [list(range(b, min(b + args.batch_size, len(prompts)))) for b in range(0, len(prompts), args.batch_size)]
    overhead = pass_overhead_tokens(cfg.micro_batch_tokens, model.device)
    buckets = tight_length_buckets(
        [len(p) + len(c) for p, c in zip(prompts, completions)], cfg.micro_batch_tokens, overhead
    )  # as score_rows
    print(
        f"model {args.preset} (vocab {args.vocab}) on {model.device} ({torch.get_num_threads()} threads), float32; "
        f"{len(prompts)} rows = {args.prompts} prompts x G={args.group}, {tokens} completion tokens"
    )
    print(
        f"completion lengths: min {lens[0]}, median {lens[len(lens) // 2]}, p90 {lens[int(0.9 * len(lens))]}, max {lens[-1]} "
        f"(log-normal, sigma {args.sigma}, clipped to [{args.min_tokens}, {args.max_tokens}])"
    )
    print(
        f"naive: {len(fixed)} batches of {args.batch_size} rows, {real / padded_tokens(prompts, completions, fixed):.0%} of padded positions real; "
        f"rladctl: {len(buckets)} buckets (micro_batch_tokens={cfg.micro_batch_tokens}, overhead {overhead}), {real / padded_tokens(prompts, completions, buckets):.0%} real"
    )
    print(f"{args.repeats} interleaved repeats after 1 warm-up each")
    print(f"{'path':<10}{'median s':>10}{'min s':>9}{'max s':>9}{'tokens/s':>11}")
    speed = {}
    for name, values in times.items():
        speed[name] = tokens / statistics.median(values)
        print(
            f"{name:<10}{statistics.median(values):>10.2f}{min(values):>9.2f}{max(values):>9.2f}{speed[name]:>11,.0f}"
        )
    ratio = speed["rladctl"] / speed["naive"]
    ok = ratio >= args.min_speedup and diff <= 1e-4
    print(f"max |naive - rladctl| log-prob = {diff:.2e}")
    print(f"rladctl / naive tokens/s = {ratio:.2f}x (target >= {args.min_speedup}x): {'ok' if ok else 'FAIL'}")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(
                {
                    "benchmark": "score-teacher tokens/s, variable lengths",
                    "rladctl": f"{speed['rladctl']:,.0f} tok/s",
                    "baseline": f"{speed['naive']:,.0f} tok/s (padded batches of {args.batch_size})",
                    "ratio": f"{ratio:.2f}x",
                    "target": f">= {args.min_speedup}x",
                    "ok": ok,
                },
                f,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
