"""train: rollout -> score-teacher -> train end to end, every objective, invariants, reruns, continuation.

Faults (SIGKILL and resume, bad inputs, non-finite losses) are in test_train_faults.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import GROUP, PROMPTS

from rladctl.config import load_recipe
from rladctl.store import schema as S
from rladctl.store.artifacts import open_artifact
from rladctl.store.checkpoint import (
    METRICS_FILE,
    load_training_state,
    read_manifest,
    read_metrics,
)


def train(shards, out: Path, *extra: str, model: Path | None = None, inputs: str = "scored", overwrite: bool = False):
    from rladctl.stages.train import run_train

    recipe = load_recipe(
        None,
        [
            f'train.model="{model or shards["student"]}"',
            f'train.inputs=["{shards[inputs]}"]',
            f'train.out="{out}"',
            "train.mini_batches=2",
            "train.lr=1e-3",
            *extra,
        ],
    )
    return run_train(recipe, overwrite=overwrite)


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(path) / "model.safetensors")


def max_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_shards_have_rewards_that_train(shards):
    rewards = open_artifact(shards["scored"], [S.SCORED]).table()[S.REWARD].to_pylist()
    assert len(rewards) == PROMPTS * GROUP and 0 < sum(rewards) < len(rewards)


def test_trrd_end_to_end_reloads_with_plain_transformers_and_generates(shards, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary = train(shards, tmp_path / "ckpt", 'objective.name="trrd"')
    assert summary.steps == 2 and summary.rows == PROMPTS * GROUP and not summary.skipped
    metrics = read_metrics(tmp_path / "ckpt")
    assert [m["step"] for m in metrics] == [1, 2] and not any(m["skipped"] for m in metrics)
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in metrics)
    assert sum(m["tokens"] for m in metrics) == summary.tokens > 0
    # Step 1 trains at the start weights: lp = lp_old, so only the teacher term moves the ratio.
    assert metrics[0]["approx_kl_old"] == pytest.approx(0.0, abs=1e-6) and metrics[0]["teacher_clamp_frac"] >= 0
    assert max_change(weights(tmp_path / "ckpt"), weights(shards["student"])) > 1e-4

    manifest = read_manifest(tmp_path / "ckpt")
    assert manifest["kind"] == S.CHECKPOINT and manifest["global_step"] == 2
    assert manifest["objective"]["name"] == "trrd" and manifest["objective"]["clamp_mode"] == "hard"
    assert load_training_state(tmp_path / "ckpt")["step"] == 2
    assert not (tmp_path / "ckpt.partial").exists()
    lines = (tmp_path / "ckpt" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    prompt = tokenizer("3 + 4 =", return_tensors="pt")
    generated = model.generate(
        **prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 5


@pytest.mark.parametrize(
    "objective, extra, rows",
    [
        ("grpo", ["train.recompute_old=false"], None),
        ("kdrl", ["objective.kl_beta=0.5", "objective.kl_beta_end=0.1"], None),
        ("sft", [], "reward"),  # default sft_min_reward = 1.0 keeps the rewarded rows only
        ("sft", ["train.sft_min_reward=0.0"], "all"),  # what an untrained student's rollouts need
        ("opd", [], "all"),  # the teacher's per-token advantage: no group is dropped
        ("opd_grpo", ["objective.opd_beta=0.5"], "all"),
    ],
)
def test_each_objective_trains(shards, tmp_path, objective, extra, rows):
    summary = train(shards, tmp_path / "ckpt", f'objective.name="{objective}"', *extra)
    metrics = read_metrics(tmp_path / "ckpt")
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) for m in metrics)
    assert max_change(weights(tmp_path / "ckpt"), weights(shards["student"])) > 1e-4
    if objective == "kdrl":  # annealed linearly from kl_beta to kl_beta_end over the 2 steps
        assert metrics[0]["kl_beta"] == pytest.approx(0.5) and metrics[1]["kl_beta"] < 0.5
        assert metrics[0]["kl_teacher"] > 0
    if objective == "sft":
        rewards = open_artifact(shards["scored"], [S.SCORED]).table()[S.REWARD].to_pylist()
        assert summary.rows == (sum(r >= 1.0 for r in rewards) if rows == "reward" else len(rewards))
        assert metrics[0]["nll"] > 0
    if objective.startswith("opd"):
        assert summary.rows == PROMPTS * GROUP and metrics[0]["dropped_groups"] == 0
        assert metrics[0]["approx_kl_old"] == pytest.approx(0.0, abs=1e-6)  # step 1: lp = lp_old
        assert metrics[0]["teacher_logratio_mean"] != 0.0  # the advantage the student learns from


def test_opd_trains_from_the_command_line(shards, tmp_path):
    from conftest import run_cli, sets

    out = tmp_path / "ckpt"
    args = ["train", "--model", str(shards["student"]), "--input", str(shards["scored"]), "--out", str(out)]
    done = run_cli(*args, *sets("objective.name=opd", "train.lr=1e-3"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == len(read_metrics(out)) > 0
    assert read_manifest(out)["objective"]["name"] == "opd"
    assert max_change(weights(out), weights(shards["student"])) > 1e-4


def test_grpo_and_sft_train_on_unscored_rollouts(shards, tmp_path):
    assert train(shards, tmp_path / "g", 'objective.name="grpo"', inputs="rollouts").steps == 2
    assert train(shards, tmp_path / "s", 'objective.name="sft"', inputs="rollouts").steps == 2


def test_trrd_alpha_one_updates_weights_exactly_as_grpo(shards, tmp_path):
    train(shards, tmp_path / "grpo", 'objective.name="grpo"')
    train(shards, tmp_path / "trrd1", 'objective.name="trrd"', "objective.alpha=1.0")
    train(shards, tmp_path / "trrd", 'objective.name="trrd"', "objective.alpha=0.5")
    grpo, trrd1 = weights(tmp_path / "grpo"), weights(tmp_path / "trrd1")
    assert max_change(grpo, weights(shards["student"])) > 1e-4  # the comparison is not between two no-ops
    assert max_change(grpo, trrd1) <= 1e-6
    assert max_change(grpo, weights(tmp_path / "trrd")) > 1e-4  # and the teacher term does matter
    loss = lambda d: [m["loss"] for m in read_metrics(tmp_path / d)]  # noqa: E731
    assert loss("trrd1") == pytest.approx(loss("grpo"), abs=1e-6)


def test_rerun_is_a_noop_and_a_different_run_is_refused_without_overwrite(shards, tmp_path):
    from rladctl.errors import ArtifactError

    out = tmp_path / "ckpt"
    train(shards, out, 'objective.name="grpo"')
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert train(shards, out, 'objective.name="grpo"').skipped
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ArtifactError, match="different run.*--overwrite"):
        train(shards, out, 'objective.name="grpo"', "train.lr=2e-3")
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = train(shards, out, 'objective.name="grpo"', "train.lr=2e-3", overwrite=True)
    assert not summary.skipped and read_manifest(out)["train"]["lr"] == 2e-3


def test_continue_optimizer_carries_adamw_state_and_global_step(shards, tmp_path):
    """Two one-step calls chained through a checkpoint equal one two-epoch call.

    SFT ignores lp_old (which each call recomputes from its own start model), and one mini-batch
    per epoch puts every row in every step, so the only state that crosses calls is AdamW's.
    """
    sft = ['objective.name="sft"', "train.sft_min_reward=0.0", "train.mini_batches=1"]
    train(shards, tmp_path / "both", *sft, "train.epochs=2")
    train(shards, tmp_path / "first", *sft)
    train(shards, tmp_path / "second", *sft, model=tmp_path / "first")
    train(shards, tmp_path / "fresh", *sft, "train.continue_optimizer=false", model=tmp_path / "first")

    assert [m["step"] for m in read_metrics(tmp_path / "second")] == [2]
    assert (
        read_manifest(tmp_path / "second")["global_step"] == 2 and load_training_state(tmp_path / "second")["step"] == 2
    )
    state = load_training_state(tmp_path / "second")["optimizer"]["state"]
    assert all(int(s["step"]) == 2 for s in state.values())
    assert max_change(weights(tmp_path / "second"), weights(tmp_path / "both")) <= 1e-6
    # A fresh AdamW takes a full lr-sized first step: visibly not the continued run.
    assert max_change(weights(tmp_path / "fresh"), weights(tmp_path / "both")) > 1e-4
    assert [m["step"] for m in read_metrics(tmp_path / "fresh")] == [1]
    # The carried state brings its step and moments, not the earlier run's hyperparameters.
    train(shards, tmp_path / "decay", *sft, "train.weight_decay=0.1", model=tmp_path / "first")
    assert load_training_state(tmp_path / "decay")["optimizer"]["param_groups"][0]["weight_decay"] == 0.1


@pytest.mark.parametrize("group_size", [1, 2])
def test_a_step_where_every_advantage_is_zero_says_so_in_one_line(models, tmp_path, group_size):
    """G = 1 (or groups whose rewards all agree: an untrained student never answers right) gives
    GRPO nothing to learn from: the step is a no-op, and the log says why instead of staying silent."""
    from conftest import TASK_SETS, run_cli, sets

    rollouts = tmp_path / "r"
    done = run_cli(
        "rollout", "--model", str(models["student"]), "--out", str(rollouts), "-n", "3", "-G", str(group_size),
        *sets(*TASK_SETS, "rollout.max_new_tokens=4"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not any(open_artifact(rollouts, [S.ROLLOUTS]).table()[S.REWARD].to_pylist())  # all 0: equal in each group
    args = ["train", "--model", str(models["student"]), "--input", str(rollouts), "--out", str(tmp_path / "c")]
    done = run_cli(*args, *sets("objective.name=grpo"), env={"RLADCTL_QUIET": None})
    assert done.returncode == 0, done.stderr
    why = "every group holds one sample (G = 1)" if group_size == 1 else "every group's rewards are all equal"
    warning = (
        f"warning: every advantage is 0 ({why}): the reward term of objective 'grpo' moves no weight in this step; "
        "sample more completions per prompt (-G)"
    )
    assert warning in done.stderr.splitlines()
