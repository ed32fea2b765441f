"""Time per optimizer step of grpo and trrd, side by side, on one model and one set of cached shards.

    python benchmarks/train_step.py                      # tiny-4m student, 16 prompts x G=4, 32 tokens
    python benchmarks/train_step.py --preset tiny-10m --repeats 21 --device cuda

Builds (once, under --workdir) a tiny teacher and student, a rollouts artifact and its teacher-scored
copy; later runs reuse them. Then, in ONE process on ONE model, it times the train stage's own
``optimizer_step`` plus ``optimizer.step()`` for each objective, interleaved (grpo, trrd, then
trrd, grpo, ...) so that drift in machine load hits both alike, and prints medians and the ratio.
TRRD adds a few elementwise ops on [B, T] tensors to GRPO's loss; the target is trrd/grpo <= 1.03.
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
        "--workdir", default=os.path.join("/tmp", "rladctl-bench-train-step"), help="models and shards are cached here"
    )
    parser.add_argument("--preset", default="tiny-4m", help="init-model preset of teacher and student")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=4, help="G completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per objective")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per objective first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    return parser.parse_args()


def build_shards(args: argparse.Namespace) -> tuple[Path, Path]:
    """Student and scored artifact under the workdir; every stage is a no-op when already done."""
    from rladctl.config import load_recipe
    from rladctl.models.factory import init_model
    from rladctl.stages.rollout import run_rollout
    from rladctl.stages.score_teacher import run_score_teacher
    from rladctl.tasks.catalog import build_task

    root = Path(args.workdir) / f"{args.preset}-p{args.prompts}-g{args.group}-t{args.max_new_tokens}"
    teacher, student = root / "teacher", root / "student"
    if not (student / "config.json").exists():
        texts = build_task(load_recipe(None, TASK).task).corpus(400)
        init_model(teacher, args.preset, texts=texts, vocab_size=320, seed=1, overwrite=True)
        init_model(student, args.preset, tokenizer=teacher, seed=0, overwrite=True)
    run_rollout(
        load_recipe(
            None,
            TASK
            + [
                f'rollout.model="{student}"',
                f'rollout.out="{root / "rollouts"}"',
                f"rollout.num_prompts={args.prompts}",
                f"rollout.group_size={args.group}",
                f"rollout.max_new_tokens={args.max_new_tokens}",
                f'rollout.device="{args.device}"',
            ],
        ),
        overwrite=True,
    )  # a cache from another rladctl version is rebuilt; a matching one stays a no-op
    run_score_teacher(
        load_recipe(
            None,
            [
                f'score_teacher.teacher="{teacher}"',
                f'score_teacher.input="{root / "rollouts"}"',
                f'score_teacher.out="{root / "scored"}"',
                f'score_teacher.device="{args.device}"',
            ],
        ),
        overwrite=True,
    )
    return student, root / "scored"


def main() -> None:
    args = parse_args()
    os.environ.setdefault("RLADCTL_QUIET", "1")
    import numpy as np
    import torch

    from rladctl.config import load_recipe
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.objectives import ObjectiveConfig, get_objective, get_objective_record
    from rladctl.stages.train import (
        flat_slices,
        load_rows,
        optimizer_step,
        row_logprobs,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    student, scored = build_shards(args)
    cfg = load_recipe(None, [f'train.inputs=["{scored}"]', f'train.device="{args.device}"', "train.lr=1e-6"]).train
    rows, _ = load_rows(cfg, get_objective_record("trrd"))
    model = load_model(student, dtype="float32", device=cfg.device, for_training=True)
    pad_id = load_tokenizer(student).pad_token_id or 0
    everything = list(range(len(rows)))
    old = flat_slices(rows, row_logprobs(model, rows, everything, cfg, pad_id, rows.temperature))
    teacher = [torch.tensor(t, dtype=torch.float32) for t in rows.teacher]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    step_rows = np.arange(len(rows))  # one mini-batch: every row in every step
    objectives = {name: (get_objective(name), ObjectiveConfig(name=name)) for name in ("grpo", "trrd")}
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def one_step(name: str) -> float:
        fn, obj_cfg = objectives[name]
        sync()
        t0 = time.perf_counter()
        optimizer_step(model, optimizer, fn, obj_cfg, rows, step_rows, old, None, teacher, cfg, pad_id)
        optimizer.step()
        sync()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for name in objectives:
            one_step(name)
    times: dict[str, list[float]] = {name: [] for name in objectives}
    for r in range(args.repeats):
        for name in ("grpo", "trrd") if r % 2 == 0 else ("trrd", "grpo"):
            times[name].append(one_step(name))

    tokens = sum(len(c) for c in rows.completions)
    print(
        f"model {args.preset} on {model.device} ({torch.get_num_threads()} threads), {len(rows)} rows, {tokens} completion tokens per step, "
        f"{args.repeats} interleaved repeats after {args.warmup} warm-up steps each"
    )
    print(f"{'objective':<10}{'median ms':>11}{'min ms':>9}{'max ms':>9}")
    for name, values in times.items():
        print(f"{name:<10}{1e3 * statistics.median(values):>11.1f}{1e3 * min(values):>9.1f}{1e3 * max(values):>9.1f}")
    ratio = statistics.median(times["trrd"]) / statistics.median(times["grpo"])
    paired = statistics.median(t / g for t, g in zip(times["trrd"], times["grpo"]))
    print(f"trrd/grpo: {ratio:.3f} (ratio of medians), {paired:.3f} (median of paired ratios); target <= 1.03")


if __name__ == "__main__":
    sys.exit(main())
