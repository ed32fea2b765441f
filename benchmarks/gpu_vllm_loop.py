"""GPU check: two iterations of `rladctl run` with vLLM engines kept through the run, colocated with
the trainer on one GPU (rladctl/engines.py): Qwen3-0.6B-shaped student, Qwen3-8B-shaped teacher,
random-init, built as benchmarks/gpu_loop.py builds them.

    python benchmarks/gpu_vllm_loop.py             # 8 prompts x G = 8, 1,024 new tokens
    python benchmarks/gpu_vllm_loop.py --smoke     # GPU_SESSION_SMOKE: checks what it needs, skips without it

It prints, per iteration, seconds per phase (compute: rollout tokens, scoring, train; overhead:
engine starts, weight sync into the kept student engine, the rest) and the GPU memory in use
(device-wide, torch.cuda.mem_get_info, so vLLM's allocations count) with the engines awake after
score-teacher and asleep at the start of train; then how many engines were built (2 expected:
one student, one teacher) and how long the sleeps and wake-ups took. vLLM's log goes to
<workdir>/run/vllm.log. Random weights never emit EOS, so completions run to max_new_tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vllm_loop import CLOCK, PHASES, instrument, split  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", default="qwen3-0.6b")
    ap.add_argument("--teacher", default="qwen3-8b")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--student-share", type=float, default=0.3)
    ap.add_argument("--teacher-share", type=float, default=0.55)
    ap.add_argument("--workdir", default=os.path.join("/tmp", "rladctl-gpu-vllm-loop"))
    ap.add_argument("--smoke", action="store_true", help="check the prerequisites and skip where one is missing")
    args = ap.parse_args(argv)
    args.device = "cuda"
    return args


def missing() -> str | None:
    """Why this check cannot run here, or None."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'rladctl[vllm]')"
    return None


def gib_in_use() -> float:
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def run(args, student: Path, teacher: Path) -> tuple[list[dict], dict]:
    from gpu_loop import TASK

    import rladctl.engines as engines
    import rladctl.stages.run as run_stage
    from rladctl.config import load_recipe

    instrument(CLOCK)
    rows: list[dict] = []
    seen: dict = {"builds": 0, "sleep": []}
    memory: dict[str, float] = {}  # GPU memory in use when the engines go to sleep, and after
    plain_iteration, plain_sleep = run_stage.run_iteration, engines.Keeper.sleep

    def iteration(*a, **k):
        CLOCK.now.clear()
        t0 = time.perf_counter()
        out = plain_iteration(*a, **k)
        rows.append(split({"wall": time.perf_counter() - t0, **CLOCK.now}) | {"memory": dict(memory)})
        return out

    def sleep(self):
        memory["awake GiB"] = gib_in_use()
        t0 = time.perf_counter()
        plain_sleep(self)
        seen["sleep"].append(time.perf_counter() - t0)
        memory["asleep GiB"] = gib_in_use()
        seen["builds"] = self.builds

    run_stage.run_iteration, engines.Keeper.sleep = iteration, sleep
    engine = ["backend=vllm", "dtype=bfloat16", "enforce_eager=true"]
    sets = [
        *TASK,
        f'run.dir="{Path(args.workdir) / "run"}"',
        f'run.student="{student}"',
        f'run.teacher="{teacher}"',
        f"run.iterations={args.iterations}",
        "run.eval_before=false",
        'objective.name="trrd"',
        *[f"{t}.{kv}" for t in ("rollout", "score_teacher", "eval") for kv in engine],
        f"rollout.gpu_memory_utilization={args.student_share}",
        f"eval.gpu_memory_utilization={args.student_share}",
        f"score_teacher.gpu_memory_utilization={args.teacher_share}",
        f"rollout.num_prompts={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.max_new_tokens={args.new_tokens}",
        f"rollout.prompts_per_part={args.prompts}",
        'train.device="cuda"',
        "train.gradient_checkpointing=true",
        "eval.pass_at=2",
        "eval.num_prompts=2",
        "eval.max_new_tokens=8",
        "train.lr=1e-6",
    ]
    try:
        run_stage.run_loop(load_recipe(None, sets), overwrite=True)
    finally:
        run_stage.run_iteration, engines.Keeper.sleep = plain_iteration, plain_sleep
    return rows, seen


def main(argv=None) -> None:
    args = parse_args(argv)
    reason = missing()
    if reason:
        print(f"gpu_vllm_loop: skipped: {reason}; nothing measured")
        return
    if args.smoke:
        print("gpu_vllm_loop: CUDA and vllm present; run it without --smoke to measure")
        return
    from gpu_loop import models

    student, teacher = models(args)
    rows, seen = run(args, student, teacher)
    print(
        f"{args.student} student ({args.student_share} of the GPU), {args.teacher} teacher ({args.teacher_share}), "
        f"vLLM engines kept, colocated with train; {args.prompts} prompts x G = {args.group}, {args.new_tokens} new tokens"
    )
    print(f"{'iteration':<11}" + "".join(f"{p:>16}" for p in (*PHASES, "wall", "awake GiB", "asleep GiB")))
    for i, r in enumerate(rows):
        mem = [r["memory"].get(k, float("nan")) for k in ("awake GiB", "asleep GiB")]
        print(
            f"{i + 1:<11}" + "".join(f"{r[p]:>16.3f}" for p in (*PHASES, "wall")) + "".join(f"{m:>16.2f}" for m in mem)
        )
    print(
        f"engines built: {seen['builds']} (expected 2); sleep seconds: {', '.join(f'{s:.2f}' for s in seen['sleep'])}"
    )


if __name__ == "__main__":
    main()
