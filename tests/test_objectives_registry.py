"""The objective registry and its records, ObjectiveConfig validation, and loading [objective] from a recipe dict."""

import dataclasses
import inspect

import pytest
import torch

from rladctl.config import from_dict
from rladctl.errors import ConfigError
from rladctl.objectives import (
    OBJECTIVES,
    AllRows,
    LossInputs,
    LossOutputs,
    Objective,
    ObjectiveConfig,
    RewardThreshold,
    get_objective,
    get_objective_record,
    grpo_loss,
    kdrl_loss,
    kdrl_schedule,
    opd_grpo_loss,
    opd_loss,
    register,
    sft_loss,
    trrd_loss,
)


def test_registry_names_and_lookup():
    # The paper's method first, then its baselines: `rladctl compare` lists methods in this order.
    assert list(OBJECTIVES) == ["trrd", "grpo", "kdrl", "sft", "opd", "opd_grpo"]
    assert get_objective("trrd") is trrd_loss and get_objective("grpo") is grpo_loss
    assert all(get_objective_record(name) is OBJECTIVES[name] and OBJECTIVES[name].name == name for name in OBJECTIVES)


def test_every_record_says_what_its_objective_needs():
    # name: (loss, method label, needs teacher log-probs, sampler in `run`, row filter, schedule)
    expected = {
        "trrd": (trrd_loss, "rlad", True, "student", None, None),
        "grpo": (grpo_loss, "grpo", False, "student", None, None),
        "kdrl": (kdrl_loss, "kdrl", True, "student", None, kdrl_schedule),
        "sft": (sft_loss, "offline", False, "teacher", RewardThreshold("sft_min_reward"), None),
        "opd": (opd_loss, "opd", True, "student", AllRows(), None),
        "opd_grpo": (opd_grpo_loss, "opd_grpo", True, "student", AllRows(), None),
    }
    got = {
        o.name: (o.loss, o.method, o.needs_teacher_logprobs, o.sampler, o.row_filter, o.schedule)
        for o in OBJECTIVES.values()
    }
    assert got == expected
    # `rladctl run` needs run.teacher to score (trrd, kdrl, opd, opd_grpo) or to sample (sft): grpo alone runs without one.
    assert {o.name for o in OBJECTIVES.values() if not o.needs_teacher_model} == {"grpo"}


def test_compare_takes_its_method_labels_from_the_records():
    from rladctl.objectives import method_objectives

    assert method_objectives() == {
        "rlad": "trrd",
        "grpo": "grpo",
        "kdrl": "kdrl",
        "offline": "sft",
        "opd": "opd",
        "opd_grpo": "opd_grpo",
    }
    assert list(method_objectives()) == ["rlad", "grpo", "kdrl", "offline", "opd", "opd_grpo"]  # "choose from" order


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_run_asks_for_a_teacher_exactly_when_the_record_needs_one(name, tmp_path):
    from rladctl.config import load_recipe
    from rladctl.stages.run import make_plan

    student = tmp_path / "no-such-student"
    sets = [f'run.dir="{tmp_path / "run"}"', f'run.student="{student}"', f'objective.name="{name}"']
    recipe = load_recipe(None, sets)
    with pytest.raises(Exception) as info:  # without a teacher, the next check is the student's path
        make_plan(recipe)
    teacher_error = f"objective '{name}' needs a teacher but run.teacher is empty, for run. set run.teacher."
    assert (str(info.value) == teacher_error) == OBJECTIVES[name].needs_teacher_model
    assert OBJECTIVES[name].needs_teacher_model or str(student) in str(info.value)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_a_record_needs_teacher_logprobs_exactly_when_its_loss_refuses_to_run_without_them(name):
    objective = OBJECTIVES[name]
    lp = torch.zeros(2, 3, requires_grad=True)
    inputs = LossInputs(lp, lp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3))  # no teacher_logprobs
    if objective.needs_teacher_logprobs:
        with pytest.raises(ConfigError, match=f"objective '{name}' needs teacher_logprobs"):
            objective.loss(inputs, ObjectiveConfig(name=name))
    else:
        assert objective.loss(inputs, ObjectiveConfig(name=name)).loss.requires_grad


@pytest.mark.parametrize("name", [n for n, o in OBJECTIVES.items() if o.schedule is None])
def test_without_a_schedule_every_step_uses_the_recipe_config_itself(name):
    cfg = ObjectiveConfig(name=name, kl_beta=0.3, kl_beta_end=0.1)  # kl_beta_end matters to kdrl only
    for step in (0, 5, 9):
        assert OBJECTIVES[name].config_at(cfg, step, 10) is cfg and OBJECTIVES[name].scheduled(cfg, step, 10) == {}


def test_register_refuses_a_taken_name_or_method_and_leaves_the_registry_as_it_was():
    before = dict(OBJECTIVES)
    with pytest.raises(ValueError, match="an objective with name 'grpo' is already registered"):
        register(Objective(name="grpo", loss=grpo_loss, method="grpo2"))
    with pytest.raises(ValueError, match="an objective with method 'rlad' is already registered"):
        register(Objective(name="trrd2", loss=trrd_loss, method="rlad"))
    with pytest.raises(ValueError, match="an objective with name 'new' is already registered"):  # all or none
        register(Objective(name="new", loss=grpo_loss, method="new"), Objective(name="new", loss=grpo_loss, method="x"))
    assert OBJECTIVES == before and list(OBJECTIVES) == list(before)


def test_a_new_objective_is_one_register_call(monkeypatch):
    monkeypatch.setattr("rladctl.objectives.base.OBJECTIVES", dict(OBJECTIVES))  # undone after the test
    import rladctl.objectives.base as base

    register(Objective(name="grpo_copy", loss=grpo_loss, method="grpo-copy"))
    assert base.OBJECTIVES["grpo_copy"].loss is grpo_loss and "grpo_copy" not in OBJECTIVES
    assert ObjectiveConfig(name="grpo_copy").name == "grpo_copy"  # the config accepts it at once


def test_a_bad_record_is_refused():
    with pytest.raises(ConfigError, match=r"unknown sampler 'teachr', for objective 'x'\. did you mean 'teacher'\?"):
        Objective(name="x", loss=grpo_loss, method="x", sampler="teachr")
    with pytest.raises(ValueError, match="name and method must be non-empty"):
        Objective(name="x", loss=grpo_loss, method="")
    with pytest.raises(ValueError, match="loss must be fn"):
        Objective(name="x", loss=None, method="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        OBJECTIVES["grpo"].sampler = "teacher"


def test_unknown_objective_lists_valid_names_and_a_close_match():
    for lookup in (get_objective, get_objective_record):
        with pytest.raises(ConfigError) as info:
            lookup("trdd")
        message = str(info.value)
        assert message.startswith("unknown objective 'trdd', in [objective] name.")
        assert "did you mean 'trrd'?" in message and "valid objectives: grpo, kdrl, opd, opd_grpo, sft, trrd" in message
    with pytest.raises(ValueError, match="valid objectives"):  # ConfigError is also a ValueError
        ObjectiveConfig(name="ppo")


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_has_the_one_signature_and_a_docstring(name):
    fn = OBJECTIVES[name].loss
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params] == ["inputs", "cfg"]
    assert "[B, T]" in fn.__doc__
    lp = torch.zeros(2, 3, requires_grad=True)
    inputs = LossInputs(
        lp, lp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3), teacher_logprobs=torch.zeros(2, 3)
    )
    out = fn(inputs, ObjectiveConfig(name=name))
    assert isinstance(out, LossOutputs) and out.loss.shape == () and out.loss.requires_grad
    assert all(type(v) is float for v in out.metrics.values()) and "loss" in out.metrics


def test_defaults_follow_the_paper():
    cfg = ObjectiveConfig()
    assert (cfg.name, cfg.alpha, cfg.clamp, cfg.clamp_mode) == ("trrd", 0.5, 1.0, "hard")
    assert (cfg.eps_low, cfg.eps_high, cfg.ref_beta, cfg.aggregation) == (0.2, 0.28, 0.0, "seq-mean-token-mean")


@pytest.mark.parametrize(
    "field,value",
    [
        ("alpha", 1.5),
        ("alpha", -0.1),
        ("clamp", 0.0),
        ("eps_low", 1.0),
        ("eps_high", -0.1),
        ("kl_beta", -1.0),
        ("kl_beta_end", -1.0),
        ("opd_beta", -0.1),
        ("ref_beta", -0.1),
        ("max_completion_tokens", -1),
        ("aggregation", "seq-mean"),
        ("clamp_mode", "soft"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(field, value):
    with pytest.raises(ConfigError, match=field):
        ObjectiveConfig(**{field: value})


def test_loads_from_a_recipe_table():
    table = {"name": "kdrl", "alpha": 1, "kl_beta_end": 0.001, "clamp_mode": "straight_through"}
    cfg = from_dict(ObjectiveConfig, table, "objective", "r.toml")
    assert cfg == ObjectiveConfig(name="kdrl", alpha=1.0, kl_beta_end=0.001, clamp_mode="straight_through")
    with pytest.raises(ConfigError, match="did you mean 'token-mean'"):
        from_dict(ObjectiveConfig, {"aggregation": "token_mean"}, "objective", "r.toml")
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        from_dict(ObjectiveConfig, {"alhpa": 0.3}, "objective", "r.toml")


def test_inputs_with_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="old_logprobs"):
        LossInputs(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="advantages"):
        LossInputs(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))
