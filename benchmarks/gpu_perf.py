"""GPU performance of rladctl's train step and score-teacher on Qwen3-0.6B and Qwen3-8B shapes: tokens/s, MFU, memory.

    python benchmarks/gpu_perf.py                                   # qwen3-0.6b and qwen3-8b, 4K and 8K
    python benchmarks/gpu_perf.py --presets qwen3-0.6b --seq-lens 4096 --peak-tflops 989

Needs CUDA: without it, it prints one line saying so and exits 0 (nothing measured). Each model is
rladctl.models' preset ("qwen3-0.6b": 28 layers, hidden 1024, tied head; "qwen3-8b": 36 layers,
hidden 4096, untied head; both with Qwen3's 151,936-id vocabulary), random-init, built directly on
the GPU in bfloat16 (never materialised on the host); weights are random, so only speed is measured.

train    rladctl.stages.train.optimizer_step (objective trrd: chunked LM-head log-probs, loss,
         backward, grad clipping) + AdamW step, on --rows sequences of L tokens (L = each of
         --seq-lens; prompt 512 + completion L - 512), one sequence per micro-batch
         (micro_batch_tokens = L). Weights, gradients and AdamW states in bf16 (--weights fp32 keeps
         fp32 weights under bf16 autocast, as the train stage does: 16 bytes/param, too much for 8B
         on one 80 GB GPU). Gradient checkpointing: --checkpointing auto = on above 2B parameters.
score    rladctl.backends.hf.score_rows (tight length buckets, chunked log-probs) over
         --prompts x --group rollouts whose completion lengths are log-normal (median
         --score-median, clipped to [64, --score-max]), as an RL step produces them.

tokens/s counts every position the model processes (prompt + completion, no padding). MFU =
6 N tokens/s (train) or 2 N tokens/s (score) over --peak-tflops (default 989: H100 SXM dense bf16;
H200 is the same chip's compute), N = parameters that take part in matmuls (the input embedding
lookup excluded unless tied to the head); attention's own FLOPs are not counted, so MFU is a
conservative figure at 8K. Peak memory is torch.cuda.max_memory_allocated during the timed part.
A configuration that runs out of memory prints OOM and the rest go on.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["qwen3-0.6b", "qwen3-8b"])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192], help="tokens per training sequence")
    parser.add_argument("--rows", type=int, default=4, help="sequences per optimizer step")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after 1 warm-up)")
    parser.add_argument("--weights", choices=("bf16", "fp32"), default="bf16", help="training weights/optimizer dtype")
    parser.add_argument("--checkpointing", choices=("auto", "on", "off"), default="auto", help="gradient checkpointing")
    parser.add_argument("--prompts", type=int, default=16, help="score: P prompts")
    parser.add_argument("--group", type=int, default=8, help="score: G completions per prompt")
    parser.add_argument("--score-median", type=int, default=1024, help="score: median completion length")
    parser.add_argument("--score-max", type=int, default=8192, help="score: max_new_tokens (the clip)")
    parser.add_argument("--score-repeats", type=int, default=3)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of the GPU (H100 SXM: 989)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("train", "score"))
    parser.add_argument(
        "--device", default="cuda", help=argparse.SUPPRESS
    )  # "cpu" + a tiny preset: smoke-test the code
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# model


def build_model(preset: str, device: str, dtype):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rladctl.models.factory import preset_config

    cfg = preset_config(preset)
    cfg.setdefault("vocab_size", 151_936)
    config = Qwen3Config(**cfg, eos_token_id=0, pad_token_id=0, bos_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model


def matmul_params(model) -> int:
    """Parameters used in matmuls: all but the input embedding, whose lookup is free (unless it is the head too)."""
    total = sum(p.numel() for p in model.parameters())
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total if embed is head else total - embed.numel()


def release(*objects) -> None:
    import torch

    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Clock:
    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")


# --------------------------------------------------------------------------------------------
# train step


def train_rows(rows: int, seq_len: int, vocab: int, seed: int):
    """``rows`` sequences of seq_len tokens (prompt 512 + completion) as the train stage's Rows."""
    import numpy as np

    from rladctl.stages.train import Rows

    rng = np.random.default_rng(seed)
    prompt_len = min(512, seq_len // 2)
    prompts = [rng.integers(1, vocab, prompt_len).tolist() for _ in range(rows)]
    completions = [
        rng.integers(1, vocab, seq_len - prompt_len + 1).tolist() for _ in range(rows)
    ]  # +1: the last predicts nothing
    sampler = [(-rng.random(len(c)) * 4).tolist() for c in completions]
    teacher = [(-rng.random(len(c)) * 4).tolist() for c in completions]
    rewards = rng.random(rows)
    return Rows(
        prompts=prompts,
        completions=completions,
        sampler=sampler,
        teacher=teacher,
        rewards=rewards,
        advantages=(rewards - rewards.mean()) / (rewards.std() + 1e-6),
        dropped_groups=0,
        temperature=1.0,
    )


def measure_train(model, n_params: int, seq_len: int, args, clock: Clock) -> dict:
    import numpy as np
    import torch

    from rladctl.config import TrainConfig
    from rladctl.objectives import ObjectiveConfig, get_objective
    from rladctl.stages.train import optimizer_step

    rows = train_rows(args.rows, seq_len, model.config.vocab_size, seed=seq_len)
    cfg = TrainConfig(device=args.device, micro_batch_tokens=seq_len, dtype="auto")
    old = [torch.tensor(s, dtype=torch.float32) for s in rows.sampler]
    teacher = [torch.tensor(t, dtype=torch.float32) for t in rows.teacher]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)
    objective = get_objective("trrd"), ObjectiveConfig(name="trrd")
    step_rows = np.arange(len(rows))
    model.train()

    def step() -> None:
        optimizer_step(model, optimizer, objective[0], objective[1], rows, step_rows, old, None, teacher, cfg, pad_id=0)
        optimizer.step()

    step()  # warm-up: kernels, allocator, optimizer states
    clock.reset_peak()
    times = []
    for _ in range(args.steps):
        clock.sync()
        t0 = time.perf_counter()
        step()
        clock.sync()
        times.append(time.perf_counter() - t0)
    tokens = args.rows * seq_len
    rate = tokens / statistics.median(times)
    peak = clock.peak_gib()
    optimizer.zero_grad(set_to_none=True)
    release(optimizer)
    return {
        "tokens/s": rate,
        "mfu": 6 * n_params * rate / (args.peak_tflops * 1e12),
        "peak_gib": peak,
        "step_s": statistics.median(times),
    }


# --------------------------------------------------------------------------------------------
# score-teacher


def score_rollouts(args, vocab: int):
    import numpy as np

    rng = np.random.default_rng(0)
    prompts, completions = [], []
    for _ in range(args.prompts):
        prompt = rng.integers(1, vocab, rng.integers(128, 513)).tolist()
        lengths = np.clip(np.round(args.score_median * rng.lognormal(0.0, 1.0, args.group)), 64, args.score_max).astype(
            int
        )
        for n in lengths:
            prompts.append(prompt)
            completions.append(rng.integers(1, vocab, n).tolist())
    return prompts, completions


def measure_score(model, n_params: int, args, clock: Clock) -> dict:
    from rladctl.backends.hf import score_rows
    from rladctl.config import ScoreTeacherConfig

    model.eval()
    prompts, completions = score_rollouts(args, model.config.vocab_size)
    cfg = ScoreTeacherConfig(device=args.device)
    score_rows(model, prompts[: args.group], completions[: args.group], cfg, pad_id=0)  # warm-up
    clock.reset_peak()
    times = []
    for _ in range(args.score_repeats):
        clock.sync()
        t0 = time.perf_counter()
        score_rows(model, prompts, completions, cfg, pad_id=0)
        clock.sync()
        times.append(time.perf_counter() - t0)
    positions = sum(len(p) + len(c) - 1 for p, c in zip(prompts, completions))
    rate = positions / statistics.median(times)
    lens = sorted(len(c) for c in completions)
    return {
        "tokens/s": rate,
        "completion tokens/s": sum(lens) / statistics.median(times),
        "mfu": 2 * n_params * rate / (args.peak_tflops * 1e12),
        "peak_gib": clock.peak_gib(),
        "rows": len(prompts),
        "median_len": lens[len(lens) // 2],
        "max_len": lens[-1],
        "positions": positions,
    }


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RLADCTL_QUIET", "1")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_perf: no CUDA device here (torch.cuda.is_available() is False); this benchmark needs a GPU. Nothing measured."
        )
        return 0
    clock = Clock(args.device)
    name = torch.cuda.get_device_name() if clock.cuda else args.device
    print(f"{name}; torch {torch.__version__}; peak {args.peak_tflops:g} TFLOP/s bf16 dense; random-init weights, bf16")
    train_table, score_table = [], []
    for preset in args.presets:
        train_dtype = torch.float32 if args.weights == "fp32" else torch.bfloat16
        model = build_model(preset, args.device, train_dtype if "train" not in args.skip else torch.bfloat16)
        n = matmul_params(model)
        ckpt = args.checkpointing == "on" or (args.checkpointing == "auto" and n > 2e9)
        print(
            f"{preset}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters ({n / 1e9:.2f}B in matmuls), "
            f"gradient checkpointing {'on' if ckpt else 'off'}",
            flush=True,
        )
        if "train" not in args.skip:
            if ckpt:  # transformers 5.2x renamed gradient checkpointing to activation checkpointing
                if hasattr(model, "activation_checkpointing_enable"):
                    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for seq_len in args.seq_lens:
                try:
                    row = measure_train(model, n, seq_len, args, clock)
                except torch.cuda.OutOfMemoryError:
                    row = None
                    model.zero_grad(set_to_none=True)
                    release()
                train_table.append((preset, seq_len, ckpt, row))
                print_train_row(train_table[-1], args)
            if ckpt:
                (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
        if "score" not in args.skip:
            model.zero_grad(set_to_none=True)
            model = model.to(torch.bfloat16)
            try:
                score_table.append((preset, measure_score(model, n, args, clock)))
            except torch.cuda.OutOfMemoryError:
                score_table.append((preset, None))
            print_score_row(score_table[-1], args)
        release(model)
        del model
        release()
    return 0


def print_train_row(entry, args) -> None:
    preset, seq_len, ckpt, row = entry
    label = (
        f"train  {preset:<11} L={seq_len:<5} {args.rows} rows, {args.weights} weights, ckpt {'on' if ckpt else 'off'}"
    )
    if row is None:
        print(f"{label}: OOM", flush=True)
    else:
        print(
            f"{label}: {row['tokens/s']:>9,.0f} tok/s  MFU {100 * row['mfu']:5.1f}%  peak {row['peak_gib']:6.1f} GiB  step {row['step_s']:.2f} s",
            flush=True,
        )


def print_score_row(entry, args) -> None:
    preset, row = entry
    if row is None:
        print(f"score  {preset:<11}: OOM", flush=True)
        return
    print(
        f"score  {preset:<11} {row['rows']} rows (completion median {row['median_len']}, max {row['max_len']}; {row['positions']:,} positions): "
        f"{row['tokens/s']:>9,.0f} tok/s ({row['completion tokens/s']:,.0f} completion tok/s)  MFU {100 * row['mfu']:5.1f}%  peak {row['peak_gib']:6.1f} GiB",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
