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
