"""GPU check: `rladctl train` with FSDP2 on one GPU, Qwen3-0.6B-sized, on 4K-token scored rows.

    python benchmarks/gpu_fsdp.py                          # 16 rows x 4,096 completion tokens, 4 steps
    python benchmarks/gpu_fsdp.py --parallel fsdp ddp      # also the unsharded path, for comparison
    torchrun --nproc-per-node 8 benchmarks/gpu_fsdp.py     # the same rows over 8 GPUs

Builds (once, under --workdir) a random-init model of rladctl's "qwen3-0.6b" preset (151,936
vocabulary rows, tied head) with a small locally trained tokenizer, and a synthetic scored artifact:
P prompts x G samples, each a 64-token prompt and a --tokens completion of random ids with made-up
sampler and teacher log-probs and rewards that differ inside each group. Then it runs the train
stage itself (``run_train``: TRRD, fp32 master weights, bf16 autocast) with ``train.parallel`` set,
and prints tokens/s per optimizer step (median of the steps after the first) and the peak GPU memory
of the whole run (start-model log-probs, steps and the gathered checkpoint save included).

Without CUDA it prints one line saying so and exits 0 (``--device cpu --preset tiny-1m --tokens 64``
runs the same code on a CPU, as a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

TASK = ["task.name=chain_sum", 'prompt.template="{metadata[expression]} ="', 'prompt.instruction=""']


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join("/tmp", "rladctl-bench-gpu-fsdp"), help="model, rows and checkpoints go here"
    )
    parser.add_argument("--preset", default="qwen3-0.6b")
    parser.add_argument("--prompts", type=int, default=4, help="P")
    parser.add_argument("--group", type=int, default=4, help="G samples per prompt")
    parser.add_argument("--tokens", type=int, default=4096, help="completion tokens per row")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (mini-batches of one epoch)")
    parser.add_argument(
        "--micro-batch-tokens", type=int, default=8448, help="padded tokens per forward/backward (default: 2 rows)"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--parallel", nargs="+", default=["fsdp"], choices=["fsdp", "ddp"], help="ddp on one process = no wrapper"
    )
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test this script")
    return parser.parse_args()


def build_model(args: argparse.Namespace, path: Path) -> Path:
    """The preset with random weights (bf16 on disk) and a tokenizer trained on the task's text."""
    from rladctl.config import load_recipe
    from rladctl.models.factory import init_model
    from rladctl.tasks.catalog import build_task

    if (path / "config.json").exists():
        return path
    texts = build_task(load_recipe(None, TASK).task).corpus(400)
    return init_model(path, args.preset, texts=texts, vocab_size=320, seed=0, overwrite=True)


def build_rows(args: argparse.Namespace, model: Path, path: Path) -> Path:
    """A complete scored artifact of P x G synthetic rows (one part)."""
    import json

    import numpy as np
    import pyarrow as pa

    from rladctl.models.identity import model_identity
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.store import schema as S
    from rladctl.store.artifacts import ArtifactWriter, fingerprint

    described = {
        "bench": "gpu_fsdp",
        "prompts": args.prompts,
        "group": args.group,
        "tokens": args.tokens,
        "model": model_identity(model).get("weights_hash"),
    }
    writer = ArtifactWriter(path, S.SCORED, fingerprint(described), overwrite=True)
    if writer.complete:
        return path
    vocab = len(load_tokenizer(model))
    rng = np.random.default_rng(0)
    n = args.prompts * args.group
    ids = lambda length: rng.integers(3, vocab, length).astype(np.int32).tolist()  # noqa: E731
    logprobs = lambda: (-rng.exponential(2.0, args.tokens)).astype(np.float32).tolist()  # noqa: E731
    cols = {
        S.PROMPT_ID: [f"p{i // args.group}" for i in range(n)],
        S.SAMPLE_IDX: [i % args.group for i in range(n)],
        S.TASK: ["synthetic"] * n,
        S.TASK_METADATA: [json.dumps({})] * n,
        S.PROMPT: [""] * n,
        S.PROMPT_TOKEN_IDS: [ids(64) for _ in range(n)],
        S.COMPLETION: [""] * n,
        S.COMPLETION_TOKEN_IDS: [ids(args.tokens) for _ in range(n)],
        S.SAMPLER_LOGPROBS: [logprobs() for _ in range(n)],
        S.FINISH_REASON: [S.FINISH_LENGTH] * n,
        S.REWARD: [float(i % 2) for i in range(n)],  # every group splits
        S.ANSWER: [""] * n,
        S.EXTRACTED: [""] * n,
        S.POLICY_STEP: [0] * n,
        S.TEACHER_LOGPROBS: [logprobs() for _ in range(n)],
    }
    schema = S.scored_schema(0)
    writer.write_part(0, pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema))
    writer.finalize(1, sampling={"temperature": 1.0}, model={}, inputs=[])
    return path


def train_once(args: argparse.Namespace, parallel: str, model: Path, rows: Path) -> dict:
    import torch

    from rladctl import distributed
    from rladctl.config import load_recipe
    from rladctl.stages.train import run_train
    from rladctl.store.checkpoint import read_metrics

    out = Path(args.workdir) / f"ckpt-{parallel}-{distributed.world_size()}"
    recipe = load_recipe(
        None,
        [
            f'train.model="{model}"',
            f'train.inputs=["{rows}"]',
            f'train.out="{out}"',
            f'train.parallel="{parallel}"',
            f'train.device="{args.device}"',
            f"train.mini_batches={args.steps}",
            f"train.micro_batch_tokens={args.micro_batch_tokens}",
            f"train.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
            "train.save_every=0",
            "train.lr=1e-6",
            'objective.name="trrd"',
        ],
    )
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run_train(recipe, overwrite=True, resume=False)
    seconds = time.perf_counter() - started
    metrics = read_metrics(out)
    rates = [m["tokens_per_s"] for m in metrics[1:]] or [m["tokens_per_s"] for m in metrics]
    return {
        "parallel": parallel,
        "steps": len(metrics),
        "tokens_per_step": metrics[0]["tokens"],
        "tokens_per_s": statistics.median(rates),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "seconds": seconds,
        "loss_last": metrics[-1]["loss"],
    }


def main() -> None:
    args = parse_args()
    os.environ.setdefault("RLADCTL_QUIET", "1")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "skipped: benchmarks/gpu_fsdp.py needs a CUDA GPU and torch.cuda.is_available() is False; "
            "run it on a GPU machine (or pass --device cpu --preset tiny-1m --tokens 64 to smoke-test it)."
        )
        return
    from rladctl import distributed
    from rladctl.models.factory import count_params

    root = Path(args.workdir)
    model, rows = root / f"model-{args.preset}", root / f"rows-{args.preset}-{args.prompts}x{args.group}x{args.tokens}"
    if distributed.is_main():  # under torchrun, rank 0 builds the inputs while the others wait
        build_rows(args, build_model(args, model), rows)
    if distributed.enabled():
        distributed.init()
        distributed.barrier()
    results = [train_once(args, parallel, model, rows) for parallel in args.parallel]
    if not distributed.is_main():
        return
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    vocab = 151_936 if args.preset.startswith("qwen3") else None
    print(
        f"{args.preset} ({count_params(args.preset, vocab or 320) / 1e6:.0f}M parameters, random init; fp32 weights, bf16 autocast on cuda) "
        f"on {distributed.world_size()} x {where}, torch {torch.__version__}"
    )
    print(
        f"{args.prompts * args.group} rows of 64 + {args.tokens} tokens, {args.steps} steps, micro-batches of <= {args.micro_batch_tokens} padded tokens, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}"
    )
    print(f"{'parallel':<10}{'tokens/step':>12}{'tokens/s':>11}{'peak GiB':>10}{'run s':>8}")
    for r in results:
        print(
            f"{r['parallel']:<10}{r['tokens_per_step']:>12,}{r['tokens_per_s']:>11,.0f}{r['peak_gib']:>10.2f}{r['seconds']:>8.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
