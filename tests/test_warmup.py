"""warmup: supervised steps on gold answers lower the NLL, and the model directory is replaced whole."""

from __future__ import annotations

import shutil

import pytest
from conftest import TASK_SETS

from rladctl.config import load_recipe
from rladctl.errors import ConfigError


def test_warmup_lowers_the_gold_answer_nll_and_saves_a_loadable_model(models, tmp_path):
    from transformers import AutoModelForCausalLM

    from rladctl.stages.warmup import warmup

    recipe = load_recipe(None, TASK_SETS)
    first, trained = (shutil.copytree(models["student"], tmp_path / name) for name in ("first", "trained"))
    start = warmup(recipe, first, steps=1, batch_size=16).final_nll  # the loss of step 0: the untrained model's
    summary = warmup(recipe, trained, steps=40, batch_size=16)
    assert summary.final_nll < 0.7 * start, (start, summary.final_nll)
    assert (trained / "_manifest.json").exists() and not list(tmp_path.glob("*.tmp-*"))
    AutoModelForCausalLM.from_pretrained(trained)  # plain transformers reads it


def test_warmup_refuses_zero_steps(models, tmp_path):
    from rladctl.stages.warmup import warmup

    with pytest.raises(ConfigError, match="steps"):
        warmup(load_recipe(None, TASK_SETS), models["student"], steps=0)


# ---- the checked target: competence is measured on held-out questions, not assumed ----------------

CHECK_SETS = [*TASK_SETS, "eval.pass_at=2", "eval.max_new_tokens=4"]


def test_warmup_whose_budget_runs_out_before_the_target_is_one_error_line_and_leaves_the_model(models, tmp_path):
    from conftest import run_cli, sets

    from rladctl.models.identity import model_identity

    model = shutil.copytree(models["student"], tmp_path / "m")
    before = model_identity(str(model))["weights_hash"]
    done = run_cli(
        "warmup",
        str(model),
        *sets(*CHECK_SETS),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--target",
        "0.9",
        "--check-every",
        "1",
        "--check-prompts",
        "2",
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: warm-up of "), done.stderr
    assert "after 2 steps, short of the target 0.9" in lines[0] and "--steps" in lines[0]
    assert model_identity(str(model))["weights_hash"] == before  # nothing written
    assert not list(tmp_path.glob("*.tmp-*"))


def test_warmup_stops_at_the_first_check_that_reaches_the_target(models, tmp_path, monkeypatch):
    import json

    from rladctl.stages import warmup as stage

    means = iter([0.2, 0.5, 0.7, 0.9])  # the third check (step 6 of a budget of 100) passes 0.6
    monkeypatch.setattr(stage, "held_out_check", lambda *a, **k: {"mean": next(means), "pass_at_k": 1.0})
    model = shutil.copytree(models["student"], tmp_path / "m")
    summary = stage.warmup(load_recipe(None, CHECK_SETS), model, steps=100, batch_size=4, target=0.6, check_every=2)
    assert summary.steps == 6 and [c["step"] for c in summary.checks] == [2, 4, 6]
    manifest = json.loads((model / "_manifest.json").read_text())
    assert manifest["steps"] == 6 and manifest["max_steps"] == 100 and manifest["checks"][-1]["mean"] == 0.7


def test_held_out_check_counts_a_sample_at_the_threshold_and_averages_over_prompts_and_samples(models, monkeypatch):
    import rladctl.sampling
    from rladctl.models.loading import load_model
    from rladctl.models.tokenizer import load_tokenizer
    from rladctl.stages.warmup import held_out_check
    from rladctl.tasks.catalog import build_task

    # 3 prompts x k = 2 samples: [1, 0], [0.5, 0], [0, 0]. Mean@2 = 1.5 / 6 = 0.25; only prompt 0
    # has a sample reaching eval.threshold = 1, so Pass@2 = 1/3 (partial credit 0.5 never counts).
    monkeypatch.setattr(rladctl.sampling, "sample_rows", lambda *a, **k: {"reward": [1.0, 0.0, 0.5, 0.0, 0.0, 0.0]})
    recipe = load_recipe(None, CHECK_SETS)
    model, tokenizer = load_model(models["student"], dtype="float32"), load_tokenizer(models["student"])
    got = held_out_check(recipe, build_task(recipe.task), model, tokenizer, prompts=3, seed=0)
    assert got == pytest.approx({"mean": 0.25, "pass_at_k": 1 / 3})
    assert not model.training


def test_warmup_refuses_a_target_outside_0_1(models):
    from rladctl.stages.warmup import warmup

    with pytest.raises(ConfigError, match="target"):
        warmup(load_recipe(None, TASK_SETS), models["student"], steps=1, target=1.5)
