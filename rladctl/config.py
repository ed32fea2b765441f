"""Recipes: one TOML file per experiment, one table per stage, one frozen dataclass per table.

Unknown keys and wrong types are refused with the key's dotted name and a close-match suggestion.
``--set a.b=value`` overrides any key (the value is parsed as TOML, falling back to a bare string).
Recipes are data: nothing in them is ever executed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rladctl.errors import ConfigError, MissingPathError, close_matches

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


@dataclass(frozen=True)
class TaskConfig:
    """Where prompts and verifiers come from."""

    name: str = "chain_sum"  # a reasoning-gym dataset name, or "file" for a local JSONL/Parquet
    config: dict = field(default_factory=dict)  # kwargs for reasoning_gym.create_dataset
    mix: dict = field(default_factory=dict)  # key -> list of values: items cycle through every combination
    path: str = ""  # file tasks: JSONL or Parquet with a question and a gold answer per row
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str = ""  # file tasks: column holding a stable id (default: the row number)
    difficulty_field: str = ""  # metadata key for per-difficulty reports ("" = the task's default)
    seed: int = 0  # training split
    size: int = 100_000  # items in the training split
    eval_seed: int = 10_007  # evaluation split; its questions are removed from the training split
    eval_size: int = 200


@dataclass(frozen=True)
class PromptConfig:
    """How an item becomes prompt text; recorded in every manifest."""

    template: str = "{question}"  # str.format fields: {question} and {metadata[KEY]}
    system: str = ""
    instruction: str = "Think step by step, then give the final answer inside <answer> </answer> tags."
    chat_template: Literal["auto", "never", "always"] = "auto"  # auto: when the tokenizer has one
    answer_prefix: str = ""  # appended to the prompt; answer extraction sees prefix + completion


# Backend names a recipe may give; each is one module in rladctl/backends/ of the same name.
BackendName = Literal["hf", "vllm"]


@dataclass(frozen=True)
class EngineConfig:
    """How a model runs for sampling or scoring: the keys [rollout], [score_teacher] and [eval] share.

    The keys stay flat in each table (``rollout.backend``, ``eval.dtype``); rladctl/backends/ reads them.
    """

    backend: BackendName = "hf"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    # backend = "vllm" only (engine options; see rladctl/backends/vllm.py)
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9  # fraction of GPU memory vLLM may take (CPU: a fixed 1 GiB KV cache)
    max_model_len: int = 0  # 0 = the model's own context length
    enforce_eager: bool = False  # skip CUDA graph capture (faster start, slower decode)
    fallback_to_hf: bool = False  # use the hf backend, with a log line, when vllm is not installed

    def engine(self) -> dict[str, Any]:
        """This table's engine keys, to run another stage on the same engine (eval samples as rollout)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(EngineConfig)}


# Engine keys that change how fast rows are made, never which rows: left out of fingerprints.
ENGINE_SPEED_KEYS = (
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "enforce_eager",
    "fallback_to_hf",
)


@dataclass(frozen=True)
class RolloutConfig(EngineConfig):
    model: str = ""
    out: str = ""
    split: Literal["train", "eval"] = "train"
    num_prompts: int = 64
    prompt_offset: int = 0  # first item of the split (the on-policy loop advances it)
    group_size: int = 8  # G
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 64  # sequences per generate call
    prompts_per_part: int = 16  # rows per Parquet part = prompts_per_part * group_size
    policy_step: int = 0


@dataclass(frozen=True)
class ScoreTeacherConfig(EngineConfig):
    """Engine keys as [rollout]'s; score_teacher.backend = "vllm" scores with prompt_logprobs, temperature 1 only."""

    teacher: str = ""
    input: str = ""
    out: str = ""
    temperature: float = 1.0
    top_k: int = 0  # also store the teacher's top-k ids and log-probs per position
    micro_batch_tokens: int = 16_384  # padded tokens per forward pass
    chunk_tokens: int = 1_024  # positions per log-prob chunk (bounds the [chunk x vocab] buffer)


@dataclass(frozen=True)
class TrainConfig:
    model: str = ""  # student to start from: a HF directory or an earlier rladctl checkpoint
    inputs: tuple[str, ...] = ()  # scored artifacts (rollouts suffice for grpo and sft)
    out: str = ""  # checkpoint directory (written atomically)
    reference: str = ""  # frozen reference model for objective.ref_beta > 0 ("" = the start model)
    lr: float = 1e-6
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    total_steps: int = 0  # horizon of the schedule across runs; 0 = this call's steps
    weight_decay: float = 0.0
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    epochs: int = 1  # passes over the input rows
    mini_batches: int = 1  # optimizer steps per epoch
    micro_batch_tokens: int = 8_192  # padded tokens per forward/backward
    recompute_old: bool = True  # lp_old from the trainer (ratio 1 at the first step) or the sampler
    drop_zero_std_groups: bool = False  # drop groups whose rewards are all equal (A = 0)
    adv_eps: float = 1e-6
    sft_min_reward: float = 1.0  # sft: keep rows whose reward reaches this
    continue_optimizer: bool = True  # start from the optimizer state saved in an rladctl checkpoint
    save_optimizer: bool = (
        True  # write the AdamW state into the checkpoint (rladctl run: see run.optimizer_state_every)
    )
    save_every: int = 1  # snapshot for resume every N optimizer steps; 0 = only at the end
    max_bad_steps: int = 3  # consecutive non-finite losses before the run stops
    gradient_checkpointing: bool = False
    chunk_tokens: int = 1_024
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # bf16 autocast over fp32 weights; auto: on CUDA only
    device: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2) the model


@dataclass(frozen=True)
class EvalConfig(EngineConfig):
    models: tuple[str, ...] = ()  # models to sample and compare
    from_artifacts: tuple[str, ...] = ()  # or: score existing rollouts/eval artifacts
    labels: tuple[str, ...] = ()  # names in the tables (default: the directory names)
    out: str = ""
    pass_at: int = 32  # K
    n: int = 0  # samples per prompt; 0 = K
    num_prompts: int = 0  # 0 = task.eval_size
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    threshold: float = 1.0  # a sample is correct when its score reaches this (no partial credit)
    bootstrap: int = 1_000
    batch_size: int = 64  # sequences per generate call


@dataclass(frozen=True)
class RunConfig:
    """The on-policy loop: rollout (latest student) -> score-teacher -> train, evaluated as it goes."""

    dir: str = ""  # RUN_DIR: iter-0000/{rollouts,scored,checkpoint}, eval/, report.md
    student: str = ""  # the student at iteration 0
    teacher: str = ""  # scores rollouts (trrd, kdrl) or writes them (sft = offline distillation)
    iterations: int = 10
    eval_every: int = 0  # evaluate every N iterations (0 = only before and after)
    eval_before: bool = True  # evaluate the starting student too
    # Keep the teacher, the latest student, its AdamW state and the tokenizers in memory between stages,
    # on every rank; on a GPU only when no stage's backend is vllm (rladctl/resident.py)
    keep_models: bool = True
    # backend = "vllm": build each engine (student, teacher) once per run and put every new checkpoint's
    # weights into the student's in place; false: a new engine per stage, as `rladctl rollout` alone does
    # (rladctl/engines.py)
    keep_engines: bool = True
    # Write the student's AdamW state (2x its weights) with every Nth iteration's checkpoint and the
    # last; the others hold weights only. A resumed run rebuilds a missing state by replaying train
    # from the saved artifacts. Where models are not kept (off, a GPU, torchrun), every checkpoint holds it.
    optimizer_state_every: int = 10
    # Bounded disk (rladctl/store/iterations.py): once an iteration is complete, older checkpoints go
    # but the newest keep_last (0 = keep every one), every keep_every-th (the checkpoint after N, 2N, ...
    # updates; 0 = none) and the final one; and any a resume still needs (back to the newest holding
    # its AdamW state). keep_artifacts: "all" keeps every iteration's rollouts and scored artifacts,
    # "last" only those of the kept checkpoints. Evaluations and each iteration's _iteration.json stay.
    keep_last: int = 2
    keep_every: int = 0
    keep_artifacts: Literal["all", "last"] = "all"


@dataclass(frozen=True)
class LogConfig:
    """Metrics beside metrics.jsonl: train's per optimizer step, each evaluation's (`rladctl run`).

    Files go under ``run.dir`` (`rladctl run`) or beside ``train.out`` (`rladctl train`): see
    rladctl/reports/loggers.py. Rank 0 alone writes them under torchrun.
    """

    tensorboard: bool = False  # event files in <run.dir>/tensorboard/ (needs the tensorboard package)
    wandb: bool = False  # a Weights & Biases run in <run.dir>/wandb/ (needs the wandb package)
    wandb_project: str = "rladctl"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"  # offline: no network; `wandb sync` later
    run_name: str = ""  # the W&B run's name ("" = the run directory's name)


@dataclass(frozen=True)
class Recipe:
    task: TaskConfig = field(default_factory=TaskConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    score_teacher: ScoreTeacherConfig = field(default_factory=ScoreTeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --------------------------------------------------------------------------------------------
# documented ranges: checked on load, so a bad value is one line before any model loads

_AT_LEAST_1, _AT_LEAST_0, _POSITIVE = (lambda v: v >= 1, ">= 1"), (lambda v: v >= 0, ">= 0"), (lambda v: v > 0, "> 0")
_PROBABILITY = (lambda v: 0 < v <= 1, "in (0, 1]")
_ENGINE_RANGES = {
    "tensor_parallel_size": _AT_LEAST_1,
    "gpu_memory_utilization": _PROBABILITY,
    "max_model_len": _AT_LEAST_0,
}
_SAMPLING_RANGES = {
    "temperature": _POSITIVE,
    "top_p": _PROBABILITY,
    "max_new_tokens": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "seed": _AT_LEAST_0,
}
RANGES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "task": {"size": _AT_LEAST_1, "eval_size": _AT_LEAST_0, "seed": _AT_LEAST_0, "eval_seed": _AT_LEAST_0},
    "rollout": {
        **_ENGINE_RANGES,
        **_SAMPLING_RANGES,
        "prompt_offset": _AT_LEAST_0,  # num_prompts: the stage says "no prompts to sample"
        "group_size": _AT_LEAST_1,
        "prompts_per_part": _AT_LEAST_1,
        "policy_step": _AT_LEAST_0,
    },
    "score_teacher": {
        **_ENGINE_RANGES,
        "temperature": _POSITIVE,
        "top_k": _AT_LEAST_0,
        "micro_batch_tokens": _AT_LEAST_1,
        "chunk_tokens": _AT_LEAST_1,
    },
    "train": {
        "lr": _AT_LEAST_0,
        "warmup_steps": _AT_LEAST_0,
        "total_steps": _AT_LEAST_0,
        "weight_decay": _AT_LEAST_0,
        "adam_betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
        "adam_eps": _POSITIVE,
        "grad_clip": _AT_LEAST_0,
        "epochs": _AT_LEAST_1,
        "mini_batches": _AT_LEAST_1,
        "micro_batch_tokens": _AT_LEAST_1,
        "adv_eps": _AT_LEAST_0,
        "save_every": _AT_LEAST_0,
        "max_bad_steps": _AT_LEAST_1,
        "chunk_tokens": _AT_LEAST_1,
        "seed": _AT_LEAST_0,
    },
    "eval": {
        **_ENGINE_RANGES,
        **_SAMPLING_RANGES,
        "pass_at": _AT_LEAST_1,
        "n": _AT_LEAST_0,
        "num_prompts": _AT_LEAST_0,
        "threshold": _PROBABILITY,
        "bootstrap": _AT_LEAST_0,
    },
    "run": {
        "iterations": _AT_LEAST_1,
        "eval_every": _AT_LEAST_0,
        "optimizer_state_every": _AT_LEAST_0,
        "keep_last": _AT_LEAST_0,
        "keep_every": _AT_LEAST_0,
    },
}


def check_ranges(table: str, value: Any, where: dict[str, str]) -> None:
    """One line for the first key of ``table`` outside its documented range (``where``: key -> origin)."""
    for key, (ok, rule) in RANGES.get(table, {}).items():
        if not ok(getattr(value, key)):
            raise ConfigError(
                f"recipe key '{table}.{key}' is {getattr(value, key)!r}",
                f"in {where.get(key, f'[{table}]')}",
                f"{table}.{key} must be {rule}",
            )


# --------------------------------------------------------------------------------------------
# loading


def _plain_tables() -> dict[str, type]:
    hints = typing.get_type_hints(Recipe)
    return {f.name: hints[f.name] for f in dataclasses.fields(Recipe)}


def table_names() -> list[str]:
    """Every recipe table's name, without importing the modules that define them."""
    return [*_plain_tables(), "objective"]


def table_types() -> dict[str, type]:
    from rladctl.objectives.base import (
        ObjectiveConfig,  # lives with the objectives it configures (imports torch)
    )

    tables = _plain_tables()
    tables["objective"] = ObjectiveConfig
    return tables


@dataclass(frozen=True)
class LoadedRecipe:
    """The resolved recipe: every table, typed, plus where it came from."""

    tables: dict[str, Any]
    source: str

    def __getattr__(self, name: str) -> Any:
        try:
            return self.tables[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, table: str, **changes: Any) -> LoadedRecipe:
        tables = dict(self.tables)
        tables[table] = dataclasses.replace(tables[table], **changes)
        return LoadedRecipe(tables, self.source)

    def to_dict(self) -> dict[str, Any]:
        return {name: to_plain(value) for name, value in self.tables.items()}


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRecipe:
    """Read a TOML recipe (or start from defaults), apply ``--set`` overrides, type-check all."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise MissingPathError(f"recipe {path} does not exist", fix="pass the path of a .toml recipe")
        if not path.is_file():
            raise ConfigError(f"recipe {path} is not a file", fix="pass the path of a .toml recipe")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"recipe {path} is not valid TOML ({exc})", fix="fix the TOML syntax") from None
        except OSError as exc:
            raise ConfigError(
                f"recipe {path} cannot be read ({exc.strerror or exc})", fix="check its permissions"
            ) from None
        source = str(path)
    # Errors name the --set that supplied a value, not the file (or "<defaults>") it never came from.
    origins: dict[str, str] = {}
    file_tables = set(raw)
    for item in overrides:
        key = apply_override(raw, item)
        table, name = key.split(".")[:2]
        origins[f"{table}.{name}"] = f"--set {item.strip()}"
        if table not in file_tables:
            origins.setdefault(table, f"--set {item.strip()}")
    return build_recipe(raw, source, origins)


def build_recipe(raw: dict[str, Any], source: str = "<dict>", origins: dict[str, str] | None = None) -> LoadedRecipe:
    """Type-check a parsed recipe. ``origins`` maps "table" or "table.key" to where its value came
    from (e.g. "--set rollout.seed=1"); anything else is reported as coming from ``source``."""
    origins = origins or {}
    names = table_names()
    for name, value in raw.items():
        where = f"in {origins.get(name, source)}"
        if name not in names:
            hint = close_matches(name, names)
            raise ConfigError(
                f"unknown recipe table [{name}]", where, hint or f"valid tables: {', '.join(sorted(names))}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"recipe key '{name}' must be a table", where, f"write it as [{name}]")
    # Plain tables first: their mistakes are reported before [objective] imports torch (~1 s).
    tables: dict[str, Any] = {}
    for name, cls in _plain_tables().items():
        tables[name] = from_dict(cls, raw.get(name, {}), prefix=name, source=source, origins=origins)
    for name, cls in table_types().items():
        if name not in tables:
            tables[name] = from_dict(cls, raw.get(name, {}), prefix=name, source=source, origins=origins)
    return LoadedRecipe(tables, source)


def apply_override(raw: dict[str, Any], item: str) -> str:
    """Apply one ``a.b=value`` override in place and return its dotted key; the value is parsed as
    TOML when it can be, else kept as a bare string."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' has no '='", "in --set", "write it as table.key=value")
    key, _, text = item.partition("=")
    key = key.strip()
    parts = [part.strip() for part in key.split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"override key '{key}' must name a table and a key", "in --set", "e.g. rollout.temperature=0.7"
        )
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}' goes through a non-table value", "in --set", "check the key path")
    node[parts[-1]] = value
    return ".".join(parts)


def from_dict(cls: type, data: dict[str, Any], prefix: str, source: str, origins: dict[str, str] | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = (origins or {}).get(f"{prefix}.{key}", source)
        if key not in names:
            hint = close_matches(key, names)
            raise ConfigError(
                f"unknown recipe key '{prefix}.{key}'",
                f"in {where}",
                hint or f"valid keys of [{prefix}]: {', '.join(names)}",
            )
        kwargs[key] = coerce(value, hints[key], f"{prefix}.{key}", where)
    built = cls(**kwargs)
    check_ranges(prefix, built, {key: (origins or {}).get(f"{prefix}.{key}", source) for key in names})
    return built


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint; ints widen to floats, lists become tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            hint_text = close_matches(str(value), [str(a) for a in args])
            raise ConfigError(
                f"recipe key '{key}' is {value!r}",
                f"in {source}",
                hint_text or f"choose one of {', '.join(map(str, args))}",
            )
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None
            try:
                return coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise _type_error(key, value, hint, source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, hint, source)
        inner = args[0] if args else Any
        return tuple(coerce(v, inner, key, source) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, hint, source)
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"recipe key '{key}' is {value!r}", f"in {source}", f"give {key} a finite number")
    if hint in (int, float) and isinstance(value, bool):
        raise _type_error(key, value, hint, source)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _type_error(key, value, hint, source)
    return value


def _type_error(key: str, value: Any, hint: Any, source: str) -> ConfigError:
    name = getattr(hint, "__name__", str(hint))
    if hint is str and not isinstance(value, (dict, list, tuple)):
        shown = str(value).lower() if isinstance(value, bool) else value
        fix = f'quote it to make it a string, e.g. {key}="{shown}"'  # --set x.y=2024 parses as an int
    else:
        fix = f"give {key} a value of type {name}"
    return ConfigError(f"recipe key '{key}' must be {name}, got {type(value).__name__} {value!r}", f"in {source}", fix)


def to_plain(value: Any) -> Any:
    """Dataclasses and tuples to JSON-able dicts and lists (for manifests and resolved configs)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value
