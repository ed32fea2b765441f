"""rollout: a valid artifact, exact sampler log-probs, byte-identical reruns, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import TASK_SETS, run_cli, sets

from rladctl.config import load_recipe
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, open_artifact


def rollout(models, out: Path, *extra: str, num_prompts: int = 8, group: int = 4):
    from rladctl.stages.rollout import run_rollout

    recipe = load_recipe(
        None,
        TASK_SETS
        + [
            f'rollout.model="{models["student"]}"',
            f'rollout.out="{out}"',
            f"rollout.num_prompts={num_prompts}",
            f"rollout.group_size={group}",
            "rollout.max_new_tokens=12",
            "rollout.prompts_per_part=2",
            *extra,
        ],
    )
    return run_rollout(recipe)


def naive_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """Full-vocabulary reference: one unpadded forward pass, log_softmax(logits / T)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float() / temperature
    logp = torch.log_softmax(logits, -1)[len(prompt) - 1 : len(prompt) - 1 + len(completion)]
    return logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_equal_a_forward_pass(models, tmp_path, temperature):
    from transformers import AutoModelForCausalLM

    summary = rollout(models, tmp_path / "r", f"rollout.temperature={temperature}")
    assert summary.rows == 32 and summary.prompts == 8
    model = AutoModelForCausalLM.from_pretrained(models["student"]).eval()
    table = open_artifact(tmp_path / "r", [S.ROLLOUTS]).table()
    worst = 0.0
    for prompt, completion, sampler in zip(
        table[S.PROMPT_TOKEN_IDS].to_pylist(),
        table[S.COMPLETION_TOKEN_IDS].to_pylist(),
        table[S.SAMPLER_LOGPROBS].to_pylist(),
    ):
        assert len(sampler) == len(completion) > 0
        ref = naive_logprobs(model, prompt, completion, temperature)
        worst = max(worst, float((ref - torch.tensor(sampler)).abs().max()))
    assert worst < 1e-4, worst


def test_artifact_contract(models, tmp_path):
    import pandas as pd

    rollout(models, tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / MANIFEST).read_text())
    assert manifest["kind"] == S.ROLLOUTS and manifest["rows"] == 32 and len(manifest["parts"]) == 4
    assert manifest["sampling"]["temperature"] == 1.0 and manifest["backend"]["name"] == "hf"
    assert manifest["prompt"]["answer_prefix"] == "<answer>" and manifest["model"]["weights_hash"]
    frame = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "r").glob("part-*.parquet")))
    assert list(frame.columns) == [f.name for f in S.ROLLOUT_FIELDS]
    groups = frame.groupby(S.PROMPT_ID)[S.SAMPLE_IDX].apply(sorted)
    assert all(g == [0, 1, 2, 3] for g in groups)
    assert set(frame[S.FINISH_REASON]) <= {S.FINISH_STOP, S.FINISH_LENGTH}
    assert ((frame[S.REWARD] >= 0) & (frame[S.REWARD] <= 1)).all()
    # A stop row ends with EOS; a length row has exactly max_new_tokens tokens.
    for reason, ids in zip(frame[S.FINISH_REASON], frame[S.COMPLETION_TOKEN_IDS]):
        assert (len(ids) == 12) if reason == S.FINISH_LENGTH else (len(ids) <= 12)


def test_same_seed_gives_byte_identical_parts(models, tmp_path):
    rollout(models, tmp_path / "a")
    rollout(models, tmp_path / "b")
    rollout(models, tmp_path / "c", "rollout.seed=1")
    parts = lambda d: [p.read_bytes() for p in sorted((tmp_path / d).glob("part-*.parquet"))]  # noqa: E731
    assert parts("a") == parts("b")
    assert parts("a") != parts("c")


def test_rerun_of_complete_output_is_a_noop_and_changed_inputs_are_refused(models, tmp_path):
    from rladctl.errors import ArtifactError

    rollout(models, tmp_path / "r")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    assert rollout(models, tmp_path / "r").skipped
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    with pytest.raises(ArtifactError, match="different run"):
        rollout(models, tmp_path / "r", "rollout.temperature=0.5")


def test_resume_after_sigkill_equals_an_uninterrupted_run(models, tmp_path):
    args = [
        "rollout",
        "--model",
        str(models["student"]),
        "-n",
        "24",
        "-G",
        "4",
        *sets(*TASK_SETS, "rollout.max_new_tokens=12", "rollout.prompts_per_part=1", "rollout.batch_size=4"),
    ]
    assert run_cli(*args, "--out", str(tmp_path / "full")).returncode == 0
    env = dict(os.environ, RLADCTL_QUIET="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rladctl", *args, "--out", str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "killed").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list((tmp_path / "killed").glob("part-*.parquet")))
    assert 3 <= written < 24 and not (tmp_path / "killed" / MANIFEST).exists()
    done = run_cli(*args, "--out", str(tmp_path / "killed"))
    assert done.returncode == 0, done.stderr
    full = open_artifact(tmp_path / "full", [S.ROLLOUTS]).table()
    resumed = open_artifact(tmp_path / "killed", [S.ROLLOUTS]).table()
    keys = lambda t: list(zip(t[S.PROMPT_ID].to_pylist(), t[S.SAMPLE_IDX].to_pylist()))  # noqa: E731
    assert keys(resumed) == keys(full) and len(set(keys(resumed))) == 24 * 4
    assert resumed.drop_columns([]).equals(full)
    assert not [p for p in (tmp_path / "killed").iterdir() if ".tmp-" in p.name]


def test_tiny_10m_rollout_64_prompts_by_8(tmp_path):
    """The issue's acceptance run: ~10M model, 64 prompts x G=8, opens in pyarrow without rladctl."""
    from conftest import task_corpus

    from rladctl.models.factory import init_model

    model = init_model(tmp_path / "m10", "tiny-10m", texts=task_corpus(), vocab_size=320, seed=0)
    done = run_cli(
        "rollout",
        "--model",
        str(model),
        "-n",
        "64",
        "-G",
        "8",
        "--out",
        str(tmp_path / "r"),
        "--json",
        *sets(*TASK_SETS, "rollout.max_new_tokens=8"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 512
    table = pq.read_table(sorted((tmp_path / "r").glob("*.parquet")))  # plain pyarrow, no rladctl
    assert table.num_rows == 512
    lengths = [len(x) for x in table[S.COMPLETION_TOKEN_IDS].to_pylist()]
    assert lengths == [len(x) for x in table[S.SAMPLER_LOGPROBS].to_pylist()]
