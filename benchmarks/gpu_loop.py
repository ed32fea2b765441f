"""GPU check: two iterations of `rladctl run` (rollout, score-teacher, train) with Qwen3-0.6B-shaped
student and Qwen3-8B-shaped teacher, random-init, on one GPU: seconds per phase and peak memory.

    python benchmarks/gpu_loop.py                  # 8 prompts x G = 8, 1,024 new tokens, hf backend
    python benchmarks/gpu_loop.py --smoke          # tiny shapes on the CPU: the same code, in seconds

The models are rladctl's "qwen3-0.6b" and "qwen3-8b" presets (151,936 vocabulary rows), built once
under --workdir directly on the GPU in bfloat16 (never materialised in float32 on the host) with a
small locally trained tokenizer; their weights are random, so completions run to max_new_tokens
(no end-of-sequence token comes) and only speed and memory mean anything. The run keeps its models
on the GPU (`run.keep_models`, hf backend): the teacher loads once, train hands the student and its
AdamW state on in memory, and the next rollout samples from a bfloat16 copy of it.

Per iteration it prints each phase's seconds: compute (rollout tokens, scoring, train) and overhead
(loads, saves, the rest), as benchmarks/run_overhead.py splits them, and the peak GPU memory
(torch.cuda.max_memory_allocated) of each stage. The final evaluation (2 prompts) is left out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_overhead import CLOCK, PHASES, instrument, split  # noqa: E402

TASK = ["task.name=chain_sum", 'prompt.template="{metadata[expression]} ="', 'prompt.instruction=""']


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", default="qwen3-0.6b")
    ap.add_argument("--teacher", default="qwen3-8b")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--workdir", default=os.path.join("/tmp", "rladctl-gpu-loop"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny-1m / tiny-4m on the CPU, 2 x 2 rows of 8 tokens")
    args = ap.parse_args(argv)
    if args.smoke:
        args.student, args.teacher, args.device = "tiny-1m", "tiny-4m", "cpu"
        args.prompts, args.group, args.new_tokens = 2, 2, 8
    return args


def build(preset: str, path: Path, tokenizer: Path, device: str, seed: int) -> Path:
    """A random-init model of ``preset`` with ``tokenizer``'s files, built on ``device`` in bfloat16."""
    import shutil

    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from rladctl.models.factory import preset_config

    if (path / "config.json").exists():
        return path
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    cfg = preset_config(preset)
    cfg["vocab_size"] = max(len(tok), cfg.get("vocab_size", 0))
    eos = tok.eos_token_id
    config = Qwen3Config(**cfg, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    for f in tokenizer.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, tmp / f.name)
    tmp.rename(path)
    del model
    return path


def models(args) -> tuple[Path, Path]:
    from rladctl.config import load_recipe
    from rladctl.models.factory import init_model
    from rladctl.tasks.catalog import build_task

    root = Path(args.workdir)
    tokenizer = root / "tokenizer-model"
    if not (tokenizer / "config.json").exists():  # a tiny model, for its trained tokenizer
        texts = build_task(load_recipe(None, TASK).task).corpus(400)
        init_model(tokenizer, "tiny-1m", texts=texts, vocab_size=320, seed=0, overwrite=True)
    t0 = time.perf_counter()
    student = build(args.student, root / args.student, tokenizer, args.device, 0)
    teacher = build(args.teacher, root / args.teacher, tokenizer, args.device, 1)
    print(f"models ready under {root} in {time.perf_counter() - t0:.1f} s")
    return student, teacher


class Peaks:
    """Peak GPU memory of each stage call, in GiB (NaN on the CPU)."""

    def __init__(self, cuda: bool):
        self.cuda, self.now = cuda, {}

    def wrap(self, module, name: str, stage: str) -> None:
        import torch

        inner = getattr(module, name)

        def measured(*args, **kwargs):
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            try:
                return inner(*args, **kwargs)
            finally:
                if self.cuda:
                    torch.cuda.synchronize()
                self.now[stage] = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")

        setattr(module, name, measured)


def run(args, student: Path, teacher: Path) -> list[dict]:
    import torch

    import rladctl.stages.rollout as rollout
    import rladctl.stages.run as run_stage
    import rladctl.stages.score_teacher as score_teacher
    import rladctl.stages.train as train
    from rladctl.config import load_recipe

    instrument(CLOCK)
    peaks = Peaks(args.device.startswith("cuda"))
    for module, name, stage in (
        (rollout, "run_rollout", "rollout"),
        (score_teacher, "run_score_teacher", "score-teacher"),
        (train, "run_train", "train"),
    ):
        peaks.wrap(module, name, stage)
    rows: list[dict] = []
    plain = run_stage.run_iteration

    def iteration(*a, **k):
        CLOCK.now.clear()
        peaks.now.clear()
        t0 = time.perf_counter()
        out = plain(*a, **k)
        if peaks.cuda:
            torch.cuda.synchronize()
        rows.append(split({"wall": time.perf_counter() - t0, **CLOCK.now}) | {"peak": dict(peaks.now)})
        return out

    run_stage.run_iteration = iteration
    dtype = "bfloat16" if peaks.cuda else "float32"
    sets = [
        *TASK,
        f'run.dir="{Path(args.workdir) / "run"}"',
        f'run.student="{student}"',
        f'run.teacher="{teacher}"',
        f"run.iterations={args.iterations}",
        "run.eval_before=false",
        'objective.name="trrd"',
        f"rollout.num_prompts={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.max_new_tokens={args.new_tokens}",
        f"rollout.prompts_per_part={args.prompts}",
        f'rollout.dtype="{dtype}"',
        f'score_teacher.dtype="{dtype}"',
        f'train.device="{args.device}"',
        f'rollout.device="{args.device}"',
        f'score_teacher.device="{args.device}"',
        f'eval.device="{args.device}"',
        "eval.pass_at=2",
        "eval.num_prompts=2",
        "eval.max_new_tokens=8",
        "train.lr=1e-6",
    ]
    try:
        run_stage.run_loop(load_recipe(None, sets), overwrite=True)
    finally:
        run_stage.run_iteration = plain
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_loop: no CUDA device here; nothing measured (--smoke runs the code on the CPU)")
        return
    student, teacher = models(args)
    rows = run(args, student, teacher)
    tokens = args.prompts * args.group * args.new_tokens
    print(
        f"{args.student} student, {args.teacher} teacher, {args.device}; {args.prompts} prompts x G = {args.group}, "
        f"at most {args.new_tokens} new tokens ({tokens:,} per iteration at most); seconds per phase"
    )
    print(f"{'iteration':<11}" + "".join(f"{p:>16}" for p in (*PHASES, "wall")))
    for i, r in enumerate(rows):
        print(f"{i + 1:<11}" + "".join(f"{r[p]:>16.3f}" for p in (*PHASES, "wall")))
    print("peak GPU memory per stage (GiB)")
    for i, r in enumerate(rows):
        print(f"{i + 1:<11}" + "".join(f"{s:>16}{v:>8.2f}" for s, v in r["peak"].items()))


if __name__ == "__main__":
    main()
