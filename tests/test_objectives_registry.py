"""The objective registry, ObjectiveConfig validation, and loading [objective] from a recipe dict."""

import inspect

import pytest
import torch

from rladctl.config import from_dict
from rladctl.errors import ConfigError
from rladctl.objectives import (
    NEEDS_TEACHER,
    OBJECTIVES,
    LossInputs,
    LossOutputs,
    ObjectiveConfig,
    get_objective,
    grpo_loss,
    trrd_loss,
)


def test_registry_names_and_lookup():
    assert list(OBJECTIVES) == ["grpo", "trrd", "kdrl", "sft"]
    assert get_objective("trrd") is trrd_loss and get_objective("grpo") is grpo_loss
    assert NEEDS_TEACHER == {"trrd", "kdrl"}


def test_unknown_objective_lists_valid_names_and_a_close_match():
    with pytest.raises(ConfigError) as info:
        get_objective("trdd")
    message = str(info.value)
    assert message.startswith("unknown objective 'trdd', in [objective] name.")
    assert "did you mean 'trrd'?" in message and "valid objectives: grpo, kdrl, sft, trrd" in message
    with pytest.raises(ValueError, match="valid objectives"):  # ConfigError is also a ValueError
        ObjectiveConfig(name="ppo")


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_has_the_one_signature_and_a_docstring(name):
    fn = OBJECTIVES[name]
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params] == ["inputs", "cfg"]
    assert "[B, T]" in fn.__doc__
    lp = torch.zeros(2, 3, requires_grad=True)
    inputs = LossInputs(lp, lp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3), teacher_logprobs=torch.zeros(2, 3))
    out = fn(inputs, ObjectiveConfig(name=name))
    assert isinstance(out, LossOutputs) and out.loss.shape == () and out.loss.requires_grad
    assert all(type(v) is float for v in out.metrics.values()) and "loss" in out.metrics


def test_defaults_follow_the_paper():
    cfg = ObjectiveConfig()
    assert (cfg.name, cfg.alpha, cfg.clamp, cfg.clamp_mode) == ("trrd", 0.5, 1.0, "hard")
    assert (cfg.eps_low, cfg.eps_high, cfg.ref_beta, cfg.aggregation) == (0.2, 0.28, 0.0, "seq-mean-token-mean")


@pytest.mark.parametrize(
    "field,value",
    [("alpha", 1.5), ("alpha", -0.1), ("clamp", 0.0), ("eps_low", 1.0), ("eps_high", -0.1),
     ("kl_beta", -1.0), ("kl_beta_end", -1.0), ("ref_beta", -0.1), ("max_completion_tokens", -1),
     ("aggregation", "seq-mean"), ("clamp_mode", "soft")],
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
