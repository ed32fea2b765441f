"""GPU check: rollout tokens/s of the hf and vllm backends on a Qwen3-0.6B-shaped random-init model.

    python benchmarks/gpu_backends.py                                  # 32 prompts x G=8, 128 new tokens
    python benchmarks/gpu_backends.py --prompts 64 --max-new-tokens 256 --backends hf

Needs CUDA (exits 2 with one line without it). The model is rladctl's "qwen3-0.6b" preset (151,936
vocabulary rows), built directly on the GPU in bfloat16 with a small tokenizer trained on the task's
text; its weights are random, so completions are noise and run to max_new_tokens: this measures
throughput only. hf runs first on the in-memory model, which is then freed; vllm (where it
imports) loads the same weights from --workdir. Each backend gets one untimed warm-up generate, then
--repeats timed ones over all P x G sequences at once; the median is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TASK  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join("/tmp", "rladctl-bench-gpu-backends"), help="the model is saved here for vllm"
    )
    parser.add_argument("--preset", default="qwen3-0.6b")
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group", type=int, default=8, help="G completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vllm's share of GPU memory")
    parser.add_argument("--device", default="cuda", help="cpu: the session's smoke run, tiny shapes, hf only")
    return parser.parse_args()


def build_model(args: argparse.Namespace, path: Path):
    """Random-init model on ``args.device`` in bf16 (never materialised in fp32 on the host), saved to ``path``."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from rladctl.config import load_recipe
    from rladctl.models.factory import preset_config
    from rladctl.models.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
    from rladctl.tasks.catalog import build_task

    path.mkdir(parents=True, exist_ok=True)
    save_tokenizer(train_tokenizer(build_task(load_recipe(None, TASK).task).corpus(400), vocab_size=320), path)
    tokenizer = load_tokenizer(path)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    shape = {"vocab_size": len(tokenizer), **preset_config(args.preset)}  # the tiny presets take the tokenizer's
    config = Qwen3Config(**shape, eos_token_id=eos, pad_token_id=pad, bos_token_id=eos, dtype="bfloat16")
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(args.device):
            model = Qwen3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(str(path))
    return model, tokenizer


def prompt_ids(args: argparse.Namespace, tokenizer) -> list[list[int]]:
    from rladctl.config import load_recipe
    from rladctl.sampling import prepare_prompts
    from rladctl.tasks.catalog import build_task

    recipe = load_recipe(None, TASK)
    prompts = prepare_prompts(build_task(recipe.task), recipe.prompt, tokenizer, "train", 0, args.prompts)
    return [ids for ids in prompts.token_ids for _ in range(args.group)]


def time_generate(generator, flat: list[list[int]], args: argparse.Namespace) -> tuple[int, float]:
    """(tokens, seconds) of the median timed repeat, after one warm-up."""
    import torch

    from rladctl.backends import SamplingParams

    runs = []
    for repeat in range(args.repeats + 1):
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=repeat)
        sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None
        sync()
        t0 = time.perf_counter()
        samples = generator.generate(flat, params)
        sync()
        if repeat:
            runs.append((sum(len(s.token_ids) for s in samples), time.perf_counter() - t0))
    median = statistics.median(seconds for _, seconds in runs)
    return min(runs, key=lambda run: abs(run[1] - median))


def main() -> None:
    args = parse_args()
    os.environ.setdefault("RLADCTL_QUIET", "1")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: benchmarks/gpu_backends.py needs a CUDA GPU and torch.cuda.is_available() is False. Run it on a GPU machine.",
            file=sys.stderr,
        )
        sys.exit(2)
    from rladctl.backends.hf import HFGenerator, eos_token_ids

    path = Path(args.workdir) / args.preset
    where = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    t0 = time.perf_counter()
    model, tokenizer = build_model(args, path)
    flat = prompt_ids(args, tokenizer)
    print(
        f"{args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, random init, bf16) on {where}, "
        f"built in {time.perf_counter() - t0:.0f} s; {args.prompts} prompts x G={args.group}, max_new_tokens {args.max_new_tokens}, "
        f"temperature 1; median of {args.repeats} after 1 warm-up",
        flush=True,
    )
    print(f"{'backend':8s} {'version':12s} {'tokens':>8s} {'seconds':>8s} {'tok/s':>9s} {'vs hf':>6s}", flush=True)
    hf_rate = None
    if "hf" in args.backends:
        generator = HFGenerator(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=len(flat))
        tokens, seconds = time_generate(generator, flat, args)
        hf_rate = tokens / seconds
        print(f"{'hf':8s} {generator.version:12s} {tokens:8d} {seconds:8.2f} {hf_rate:9.0f} {'1.00x':>6s}", flush=True)
        del generator
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    if "vllm" in args.backends:
        run_vllm(args, path, flat, hf_rate)


def run_vllm(args: argparse.Namespace, path: Path, flat: list[list[int]], hf_rate: float | None) -> None:
    from rladctl.backends.vllm import VLLMGenerator
    from rladctl.config import load_recipe
    from rladctl.errors import MissingDependencyError

    cfg = load_recipe(
        None,
        [
            f'rollout.model="{path}"',
            'rollout.dtype="bfloat16"',
            f"rollout.gpu_memory_utilization={args.gpu_memory_utilization}",
            f"rollout.max_model_len={max(len(p) for p in flat) + args.max_new_tokens}",
        ],
    ).rollout
    try:
        generator = VLLMGenerator.load(cfg, cfg.model, batch_size=cfg.batch_size, seed=cfg.seed)
    except MissingDependencyError as exc:
        print(f"{'vllm':8s} skipped: {exc.line()}", flush=True)
        return
    tokens, seconds = time_generate(generator, flat, args)
    ratio = f"{tokens / seconds / hf_rate:5.2f}x" if hf_rate else "-"
    print(
        f"{'vllm':8s} {generator.version:12s} {tokens:8d} {seconds:8.2f} {tokens / seconds:9.0f} {ratio:>6s}",
        flush=True,
    )


if __name__ == "__main__":  # vLLM starts worker processes (spawn once CUDA is initialised)
    main()
