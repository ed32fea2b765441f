"""Recipes: strict typing with close-match hints, --set overrides, round trips through to_plain."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import pytest

from rladctl.config import (
    RANGES,
    EngineConfig,
    EvalConfig,
    RolloutConfig,
    ScoreTeacherConfig,
    apply_override,
    build_recipe,
    coerce,
    load_recipe,
    to_plain,
)
from rladctl.errors import ConfigError, MissingPathError, RladError
from rladctl.objectives import ObjectiveConfig

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "?." not in text, text
    return text


# --------------------------------------------------------------------------------------------
# coerce: one value against one type hint


def test_ints_widen_to_floats_but_floats_never_narrow_to_ints():
    value = coerce(1, float, "rollout.temperature", "r.toml")
    assert value == 1.0 and type(value) is float
    with pytest.raises(ConfigError, match=r"'rollout.num_prompts' must be int, got float 1.5"):
        coerce(1.5, int, "rollout.num_prompts", "r.toml")


@pytest.mark.parametrize("hint", [int, float])
def test_bools_never_pass_as_numbers(hint):
    # bool is a subclass of int in Python; `num_prompts = true` is still a mistake.
    with pytest.raises(ConfigError, match="got bool True"):
        coerce(True, hint, "rollout.num_prompts", "r.toml")


def test_numbers_never_pass_as_bools():
    with pytest.raises(ConfigError, match="must be bool, got int 1"):
        coerce(1, bool, "rollout.trust_remote_code", "r.toml")
    assert coerce(False, bool, "rollout.trust_remote_code", "r.toml") is False


def test_lists_become_tuples_and_their_items_are_checked():
    value = coerce([0.9, 1], tuple[float, ...], "train.adam_betas", "r.toml")
    assert value == (0.9, 1.0) and isinstance(value, tuple) and type(value[1]) is float
    with pytest.raises(ConfigError, match="must be tuple, got str"):
        coerce("runs/s0", tuple[str, ...], "train.inputs", "r.toml")
    with pytest.raises(ConfigError, match="'train.inputs' must be str, got int 3"):
        coerce(["a", 3], tuple[str, ...], "train.inputs", "r.toml")


def test_literal_choices_are_enforced_with_a_suggestion_or_the_list():
    hint = Literal["hf", "vllm"]
    assert coerce("vllm", hint, "rollout.backend", "r.toml") == "vllm"
    with pytest.raises(ConfigError) as exc:
        coerce("hff", hint, "rollout.backend", "r.toml")
    assert one_line(exc) == "recipe key 'rollout.backend' is 'hff', in r.toml. did you mean 'hf'?"
    with pytest.raises(ConfigError, match="choose one of hf, vllm"):
        coerce("tensorrt", hint, "rollout.backend", "r.toml")


def test_optional_union_dict_and_any():
    assert coerce(None, float | None, "objective.kl_beta_end", "r.toml") is None
    assert type(coerce(0, float | None, "objective.kl_beta_end", "r.toml")) is float
    with pytest.raises(ConfigError, match="kl_beta_end"):
        coerce("0.1", float | None, "objective.kl_beta_end", "r.toml")
    table = {"min_terms": 2}
    copied = coerce(table, dict, "task.config", "r.toml")
    assert copied == table and copied is not table
    with pytest.raises(ConfigError, match="must be dict"):
        coerce([1], dict, "task.config", "r.toml")
    marker = object()
    assert coerce(marker, Any, "x.y", "r.toml") is marker


def test_a_number_for_a_string_key_says_to_quote_it():
    with pytest.raises(ConfigError) as exc:
        coerce(2024, str, "rollout.out", "--set rollout.out=2024")
    assert one_line(exc).endswith('quote it to make it a string, e.g. rollout.out="2024".')


# --------------------------------------------------------------------------------------------
# --set overrides


def test_override_creates_nested_tables_and_parses_toml_values():
    raw: dict[str, Any] = {}
    assert apply_override(raw, "task.config.max_terms=3") == "task.config.max_terms"
    apply_override(raw, "train.inputs=['a', 'b']")
    apply_override(raw, 'prompt.template="{question} = ?"')  # '=' inside the value is kept
    apply_override(raw, "rollout.model=models/student")  # not TOML: kept as a bare string
    apply_override(raw, " rollout.seed = 7")
    assert raw == {
        "task": {"config": {"max_terms": 3}},
        "train": {"inputs": ["a", "b"]},
        "prompt": {"template": "{question} = ?"},
        "rollout": {"model": "models/student", "seed": 7},
    }
    apply_override(raw, "task.config.min_terms=2")  # merges into the existing nested table
    assert raw["task"]["config"] == {"max_terms": 3, "min_terms": 2}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("rollout.seed", "has no '='"),
        ("seed=1", "must name a table and a key"),
        ("rollout..seed=1", "must name a table and a key"),
        ("=1", "must name a table and a key"),
    ],
)
def test_malformed_overrides_are_refused(item, message):
    with pytest.raises(ConfigError, match=message) as exc:
        apply_override({}, item)
    assert "in --set" in one_line(exc)


def test_override_through_a_non_table_value_is_refused():
    raw = {"task": {"name": "chain_sum"}}
    with pytest.raises(ConfigError, match="goes through a non-table value"):
        apply_override(raw, "task.name.x=1")


def test_overrides_win_over_file_values_and_merge_with_them(tmp_path):
    path = write(tmp_path, "[rollout]\nseed = 1\ntemperature = 0.5\n[task]\nconfig = {min_terms = 2}\n")
    recipe = load_recipe(path, ["rollout.seed=2", "task.config.max_terms=4", "rollout.seed=3"])
    assert recipe.rollout.seed == 3  # the last --set wins
    assert recipe.rollout.temperature == 0.5  # untouched file value
    assert recipe.task.config == {"min_terms": 2, "max_terms": 4}
    assert recipe.source == str(path)


def test_errors_name_the_set_that_supplied_the_bad_value(tmp_path):
    path = write(tmp_path, "[rollout]\nseed = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_recipe(path, ["rollout.num_prompts=abc"])
    assert one_line(exc).startswith(
        "recipe key 'rollout.num_prompts' must be int, got str 'abc', in --set rollout.num_prompts=abc."
    )
    with pytest.raises(
        ConfigError, match=r"unknown recipe table \[rollot\], in --set rollot.seed=1. did you mean 'rollout'\?"
    ):
        load_recipe(path, ["rollot.seed=1"])
    with pytest.raises(
        ConfigError, match=r"'rollout.temprature', in --set rollout.temprature=1. did you mean 'temperature'\?"
    ):
        load_recipe(None, ["rollout.temprature=1"])


# --------------------------------------------------------------------------------------------
# whole recipes


def test_defaults_load_without_a_file():
    recipe = load_recipe()
    assert recipe.rollout == RolloutConfig() and recipe.objective == ObjectiveConfig()
    assert recipe.source == "<defaults>"
    with pytest.raises(AttributeError):
        recipe.no_such_table  # noqa: B018


def test_unknown_key_names_the_file_and_suggests_the_close_match(tmp_path):
    path = write(tmp_path, "[rollout]\ntemprature = 0.5\n")
    with pytest.raises(ConfigError) as exc:
        load_recipe(path)
    assert one_line(exc) == f"unknown recipe key 'rollout.temprature', in {path}. did you mean 'temperature'?"
    with pytest.raises(ConfigError) as exc:
        load_recipe(write(tmp_path, "[rollout]\nzzzzzz = 1\n"))
    listed = one_line(exc).partition("valid keys of [rollout]: ")[2].rstrip(".").split(", ")
    assert listed[:2] == ["backend", "dtype"] and listed[-3:] == ["batch_size", "prompts_per_part", "policy_step"]
    assert sorted(listed) == sorted(f.name for f in dataclasses.fields(RolloutConfig))  # the engine keys first


def test_unknown_table_and_a_top_level_scalar_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown recipe table \[rollot\], in .*did you mean 'rollout'\?"):
        load_recipe(write(tmp_path, "[rollot]\nseed = 1\n"))
    with pytest.raises(ConfigError, match="valid tables: eval, log, objective, prompt, rollout"):
        load_recipe(write(tmp_path, "[qqqqqq]\nseed = 1\n"))
    with pytest.raises(ConfigError, match=r"recipe key 'rollout' must be a table.*write it as \[rollout\]"):
        build_recipe({"rollout": 3})


def test_wrong_type_in_a_file_names_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_recipe(write(tmp_path, '[rollout]\nnum_prompts = "abc"\n'))
    assert one_line(exc).startswith("recipe key 'rollout.num_prompts' must be int, got str 'abc', in ")


def test_missing_unreadable_and_malformed_recipe_files(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist") as exc:
        load_recipe(tmp_path / "nope.toml")
    assert isinstance(exc.value, FileNotFoundError)  # callers catching the stdlib type still work
    with pytest.raises(ConfigError, match="is not a file"):
        load_recipe(tmp_path)
    with pytest.raises(ConfigError, match=r"is not valid TOML \(.*line 1.*\)\. fix the TOML syntax\.") as exc:
        load_recipe(write(tmp_path, "[rollout\nseed = 1\n"))
    one_line(exc)
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe[rollout]")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_recipe(binary)


def test_objective_table_loads_into_objective_config(tmp_path):
    path = write(tmp_path, '[objective]\nname = "grpo"\nalpha = 1\nclamp_mode = "straight_through"\n')
    objective = load_recipe(path).objective
    assert isinstance(objective, ObjectiveConfig)
    assert objective.name == "grpo" and objective.alpha == 1.0 and type(objective.alpha) is float
    assert objective.clamp_mode == "straight_through" and objective.kl_beta_end is None
    with pytest.raises(ConfigError, match="did you mean 'token-mean'"):
        load_recipe(path, ["objective.aggregation=token_mean"])
    with pytest.raises(ConfigError, match=r"objective.alpha is 1.5"):
        load_recipe(path, ["objective.alpha=1.5"])


def test_to_plain_round_trips_through_json(tmp_path):
    recipe = load_recipe(
        None,
        [
            "task.config={min_terms = 2, max_terms = 3}",
            "train.inputs=['runs/s0', 'runs/s1']",
            "train.adam_betas=[0.8, 0.95]",
            "objective.kl_beta_end=0.0",
            "eval.models=['m']",
            "rollout.backend=vllm",
        ],
    )
    plain = recipe.to_dict()
    assert plain["train"]["inputs"] == ["runs/s0", "runs/s1"] and plain["objective"]["kl_beta_end"] == 0.0
    again = build_recipe(json.loads(json.dumps(plain)), "resolved.json")
    assert again.tables == recipe.tables
    assert isinstance(again.train.inputs, tuple) and again.train.adam_betas == (0.8, 0.95)
    assert again.to_dict() == plain and to_plain(again.train) == plain["train"]


def test_replace_returns_a_new_recipe_and_leaves_the_old_one():
    recipe = load_recipe()
    changed = recipe.replace("rollout", seed=5)
    assert changed.rollout.seed == 5 and recipe.rollout.seed == 0


@pytest.mark.parametrize("path", sorted((REPO / "recipes").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    load_recipe(path)


# --------------------------------------------------------------------------------------------
# the one-line error format (DESIGN §7)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("bad value", "in r.toml", "fix it"), "bad value, in r.toml. fix it."),
        (("bad value", None, "fix it."), "bad value. fix it."),
        (("unknown key 'x'", "in r.toml", "did you mean 'y'?"), "unknown key 'x', in r.toml. did you mean 'y'?"),
        (("two\nlines  here", None, None), "two lines here."),
        (("ends with a stop.", None, None), "ends with a stop."),
    ],
)
def test_error_line_format(args, line):
    assert RladError(*args).line() == line
    assert str(RladError(*args)) == line


ENGINE_KEYS = [
    "backend",
    "dtype",
    "device",
    "trust_remote_code",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "enforce_eager",
    "fallback_to_hf",
]


def test_rollout_score_teacher_and_eval_share_one_engine_and_keep_their_keys():
    """Manifests and fingerprints hash to_plain(table): the key sets must stay those recipes have always had."""
    keys = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (RolloutConfig, ScoreTeacherConfig, EvalConfig)}
    assert [f.name for f in dataclasses.fields(EngineConfig)] == ENGINE_KEYS
    assert keys[RolloutConfig] - set(ENGINE_KEYS) == {
        "model",
        "out",
        "split",
        "num_prompts",
        "prompt_offset",
        "group_size",
        "temperature",
        "top_p",
        "max_new_tokens",
        "seed",
        "batch_size",
        "prompts_per_part",
        "policy_step",
    }
    assert keys[ScoreTeacherConfig] - set(ENGINE_KEYS) == {
        "teacher",
        "input",
        "out",
        "temperature",
        "top_k",
        "micro_batch_tokens",
        "chunk_tokens",
    }
    assert keys[EvalConfig] - set(ENGINE_KEYS) == {
        "models",
        "from_artifacts",
        "labels",
        "out",
        "pass_at",
        "n",
        "num_prompts",
        "temperature",
        "top_p",
        "max_new_tokens",
        "seed",
        "threshold",
        "bootstrap",
        "batch_size",
    }
    recipe = load_recipe(None, ['eval.dtype="float32"', "eval.max_model_len=77", "rollout.enforce_eager=true"])
    assert recipe.eval.engine() == {**to_plain(EngineConfig()), "dtype": "float32", "max_model_len": 77}
    assert recipe.rollout.enforce_eager and not recipe.score_teacher.enforce_eager  # one declaration, three tables
    with pytest.raises(
        ConfigError, match=r"recipe key 'eval.backend' is 'vlm', in --set eval.backend=vlm\. did you mean 'vllm'\?"
    ):
        load_recipe(None, ["eval.backend=vlm"])


# --------------------------------------------------------------------------------------------
# documented ranges and finite numbers

OUTSIDE = {">= 1": 0, ">= 0": -1, "> 0": 0, "in (0, 1]": 1.5, "two numbers in [0, 1)": [0.9, 1.0]}
RANGED = [(table, key, rule) for table, keys in RANGES.items() for key, (_, rule) in keys.items()]


def test_every_default_lies_in_its_documented_range():
    load_recipe(None)  # raises on the first default outside its range


@pytest.mark.parametrize(("table", "key", "rule"), RANGED, ids=[f"{t}.{k}" for t, k, _ in RANGED])
def test_a_value_outside_its_documented_range_is_one_line_naming_the_key(table, key, rule):
    import typing

    from rladctl.config import table_types

    bad = OUTSIDE[rule]
    shown = tuple(bad) if isinstance(bad, list) else bad
    if typing.get_type_hints(table_types()[table])[key] is float:
        shown = float(bad)  # the loader widens an int to the key's float
    with pytest.raises(ConfigError) as exc:
        load_recipe(None, [f"{table}.{key}={json.dumps(bad)}"])
    assert str(exc.value) == (
        f"recipe key '{table}.{key}' is {shown!r}, in --set {table}.{key}={json.dumps(bad)}. "
        f"{table}.{key} must be {rule}."
    )


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_in_any_float_key(text):
    for key in ("rollout.temperature", "train.lr", "eval.top_p", "objective.alpha"):
        with pytest.raises(ConfigError) as exc:
            load_recipe(None, [f"{key}={text}"])
        assert (
            str(exc.value)
            == f"recipe key '{key}' is {float(text)!r}, in --set {key}={text}. give {key} a finite number."
        )
