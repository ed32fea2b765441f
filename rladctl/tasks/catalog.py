"""Tasks: where prompts, gold answers and rewards come from.

Two kinds, chosen by ``TaskConfig.name``:

- any reasoning-gym dataset (``reasoning_gym.factory.DATASETS``), scored by the dataset's own
  ``score_answer`` (partial credit kept);
- ``"file"``: a local JSONL or Parquet file with a question and a gold answer per row, scored by
  math-verify.

Each task has two splits, ``train`` and ``eval``; item ``i`` of a split is the same on every call
and in every process, so a rollout row can be re-scored from its metadata alone. Heavy libraries
(reasoning_gym, math_verify, pyarrow) are imported only when a task is built.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rladctl.config import PromptConfig, TaskConfig
from rladctl.errors import ArtifactError, ConfigError, MissingPathError, close_matches
from rladctl.tasks.verifiers import (
    extract_answer,
    math_verify_score,
    math_verify_version,
)

__all__ = [
    "SPLITS",
    "TaskItem",
    "Task",
    "GymTask",
    "FileTask",
    "build_task",
    "render_prompt",
    "extract_answer",
    "score_completion",
    "json_safe",
]

SPLITS = ("train", "eval")
MAX_DRAWS = 32  # fresh draws tried for a training position whose question is held out

# Per-item difficulty for reports, as a dotted metadata path. reasoning-gym's own "difficulty"
# entry often holds the config's ranges (chain_sum: {"num_terms": [2, 6]}), not the item's level.
DEFAULT_DIFFICULTY = {"knights_knaves": "difficulty.n_people", "chain_sum": "num_terms"}


@dataclass(frozen=True)
class TaskItem:
    """One prompt: its stable id, question, gold answer and JSON-safe metadata.

    ``metadata`` always holds "split" and "index" (the item's position in that split), enough for
    ``Task.score`` to find the item again, plus the task's own metadata (difficulty, ...).
    """

    prompt_id: str
    question: str
    answer: str
    metadata: dict


class Task:
    """The interface every task offers; the two kinds below implement ``_item`` and ``score``."""

    name: str
    reward_version: str  # reward function and version for manifests, e.g. "reasoning_gym==0.1.25"

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def split_size(self, split: str) -> int:
        raise NotImplementedError

    def items(self, split: str, start: int = 0, count: int = 1) -> list[TaskItem]:
        """``count`` items from position ``start`` of ``split``.

        Positions wrap around the split (position p is item ``p % split_size``), so an on-policy
        loop that keeps advancing its offset cycles through the training split instead of failing
        at its end. Items repeat only once the whole split has been used, and never within one call:
        asking for more items than the split holds is refused (one artifact never holds a prompt twice,
        which would merge two advantage groups into one).
        """
        size = self.split_size(split)
        if start < 0 or count < 0:
            raise ConfigError(
                f"item range start={start} count={count} is negative",
                f"in task '{self.name}'",
                "pass start >= 0 and count >= 0",
            )
        if count == 0:
            return []
        if size == 0:
            raise ConfigError(
                f"the {split} split of task '{self.name}' is empty",
                "in [task]",
                "raise task.size / task.eval_size or add rows to the file",
            )
        if count > size:
            key = "task.eval_size" if split == "eval" else "task.size (or add rows to the file)"
            raise ConfigError(
                f"{count} {split} prompts were asked for but the {split} split of task '{self.name}' holds {size}",
                "in [task]",
                f"ask for at most {size} prompts, or raise {key}",
            )
        return [self._item(split, (start + i) % size) for i in range(count)]

    def _item(self, split: str, position: int) -> TaskItem:
        raise NotImplementedError

    def score(self, metadata: dict, extracted: str) -> float:
        """Reward in [0, 1] for the bare answer ``extracted``; "" scores 0.0."""
        raise NotImplementedError

    def difficulty(self, metadata: dict) -> str | None:
        """The item's difficulty level for per-level reports, or None when the task has none.

        ``task.difficulty_field`` (a dotted metadata path) when set, else the task's default
        (knights_knaves: number of people, chain_sum: number of terms), else
        ``metadata["difficulty"]`` when it is a single value.
        """
        value = _lookup(metadata, self.cfg.difficulty_field or DEFAULT_DIFFICULTY.get(self.name, "difficulty"))
        if value is None or isinstance(value, (dict, list)):
            return None
        return str(value)

    def corpus(self, n: int) -> list[str]:
        """Up to ``n`` texts, question + newline + answer, from the start of the training split."""
        count = min(n, self.split_size("train"))
        return [f"{item.question}\n{item.answer}" for item in self.items("train", 0, count)]

    def _locate(self, metadata: dict) -> tuple[str, int]:
        split, index = metadata.get("split"), metadata.get("index")
        if split not in SPLITS or not isinstance(index, int) or not 0 <= index < self.split_size(split):
            raise ArtifactError(
                f"task metadata {{'split': {split!r}, 'index': {index!r}}} does not point at an item of task '{self.name}'",
                "in the row being scored",
                "score rows with the task config that produced them",
            )
        return split, index

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(
                f"unknown split '{split}'",
                f"in task '{self.name}'",
                close_matches(split, SPLITS) or "use train or eval",
            )


# --------------------------------------------------------------------------------------------
# reasoning-gym


_HELD_OUT: dict[str, frozenset[str]] = {}  # GymTask._held_out_questions, by key, for this process


class GymTask(Task):
    """A reasoning-gym dataset: train = (seed, size), eval = (eval_seed, eval_size).

    Held-out questions: a training position whose question also appears in the eval split is
    replaced by the same position of a fresh draw (seed + k * size, k = 1, 2, ...), so the split
    keeps ``size`` items and finding item p costs O(1) instead of a scan over the 100k items
    before it. Item metadata records the seed that produced it ("seed") for re-scoring.
    This matters: reasoning-gym seeds each item with seed + index, so train and eval overlap
    whenever the ranges [seed, seed+size) and [eval_seed, eval_seed+eval_size) do.
    """

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.name = cfg.name
        self.reward_version = f"reasoning_gym=={version('reasoning-gym')}"
        self._configs = _mixed_configs(cfg, _check_gym_config(cfg))
        self._make_dataset = functools.lru_cache(maxsize=64)(self._create_dataset)
        self._entry = functools.lru_cache(maxsize=4096)(self._make_entry)
        self._held_out: frozenset[str] | None = None
        for mix in range(len(self._configs)):
            self._create_dataset(cfg.seed, 1, mix)  # surfaces the config's own validation errors now, cheaply

    def split_size(self, split: str) -> int:
        self._check_split(split)
        return self.cfg.size if split == "train" else self.cfg.eval_size

    def _create_dataset(self, seed: int, size: int, mix: int = 0):
        import reasoning_gym

        try:
            return reasoning_gym.create_dataset(self.name, seed=seed, size=size, **self._configs[mix])
        except (AssertionError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"task '{self.name}' rejects its config ({exc or type(exc).__name__})",
                "in task.config",
                "fix the value; see the dataset's config class in reasoning_gym",
            ) from None

    def _make_entry(self, seed: int, size: int, index: int, mix: int = 0) -> dict:
        # With a mix, position p is item p // m of combination p % m (m combinations).
        m = len(self._configs)
        return self._make_dataset(seed, -(-size // m), mix)[index // m]

    def _held_out_questions(self) -> frozenset[str]:
        """Every eval question, which no training item may be.

        Generating them can take long (700 Knights & Knaves puzzles of up to 8 people: about 13 s
        on a CPU core), and every stage of every iteration builds its task afresh, so they are kept
        in this process and in rladctl's cache, keyed by everything that decides them.
        """
        if self._held_out is None:
            from rladctl.cache import cache_dir, read_cache, write_cache

            what = {"task": self.name, "configs": self._configs, "eval_seed": self.cfg.eval_seed,
                    "eval_size": self.cfg.eval_size, "version": self.reward_version}  # fmt: skip
            key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]
            cache_file = cache_dir() / "held-out" / f"{key}.json"
            questions = _HELD_OUT.get(key)
            if questions is None:
                cached = read_cache(cache_file)
                if isinstance(cached, dict) and cached.get("for") == json.loads(json.dumps(what, default=str)):
                    questions = frozenset(cached["questions"])
                else:
                    m = len(self._configs)
                    questions = frozenset(
                        self._entry(self.cfg.eval_seed, self.cfg.eval_size, i, i % m)["question"]
                        for i in range(self.cfg.eval_size)
                    )
                    write_cache(cache_file, {"for": what, "questions": sorted(questions)})
                _HELD_OUT[key] = questions
            self._held_out = questions
        return self._held_out

    def _item(self, split: str, position: int) -> TaskItem:
        seed, size = (self.cfg.seed, self.cfg.size) if split == "train" else (self.cfg.eval_seed, self.cfg.eval_size)
        mix = position % len(self._configs)
        entry = self._entry(seed, size, position, mix)
        if split == "train":
            held_out = self._held_out_questions()
            for draw in range(1, MAX_DRAWS + 1):
                if entry["question"] not in held_out:
                    break
                seed = self.cfg.seed + draw * size
                entry = self._entry(seed, size, position, mix)
            else:
                raise ConfigError(
                    f"task '{self.name}' keeps drawing evaluation questions for training item {position}",
                    "in [task]",
                    "its question space is too small to hold out task.eval_size items; lower task.eval_size or widen task.config",
                )
        metadata = {**json_safe(entry.get("metadata", {})), "split": split, "index": position, "seed": seed}
        if len(self._configs) > 1:
            metadata["mix"] = mix
        return TaskItem(f"{self.name}/{split}/{position:07d}", str(entry["question"]), str(entry["answer"]), metadata)

    def score(self, metadata: dict, extracted: str) -> float:
        split, index = self._locate(metadata)
        if not extracted.strip():
            return 0.0
        size = self.split_size(split)
        seed = metadata.get("seed", self.cfg.seed if split == "train" else self.cfg.eval_seed)
        try:
            mix = int(metadata.get("mix", 0))
            entry = self._entry(seed, size, index, mix)
            value = float(self._make_dataset(seed, -(-size // len(self._configs)), mix).score_answer(extracted, entry))
        except Exception:  # a verifier that chokes on a strange answer gives no reward
            return 0.0
        return min(1.0, max(0.0, value))


def _mixed_configs(cfg: TaskConfig, base: dict) -> list[dict]:
    """One config per combination of ``task.mix`` values (e.g. n_people = [2, 3, ..., 8])."""
    import itertools

    if not cfg.mix:
        return [base]
    keys = sorted(cfg.mix)
    for key in keys:
        values = cfg.mix[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"task.mix.{key} must be a non-empty list", "in task.mix", f"e.g. {key} = [2, 3, 4]")
        if key in base:
            raise ConfigError(
                f"task key '{key}' is set in both task.config and task.mix", "in [task]", "set it in one of them"
            )
    _check_gym_config(
        TaskConfig(name=cfg.name, config={k: cfg.mix[k][0] for k in keys}, size=cfg.size, eval_size=cfg.eval_size)
    )
    return [base | dict(zip(keys, combo)) for combo in itertools.product(*(cfg.mix[k] for k in keys))]


def _check_gym_config(cfg: TaskConfig) -> dict:
    from reasoning_gym.factory import DATASETS

    if cfg.name not in DATASETS:
        raise ConfigError(
            f"unknown task '{cfg.name}'",
            "in task.name",
            close_matches(cfg.name, DATASETS)
            or "use 'file' or a reasoning-gym dataset name such as chain_sum or knights_knaves",
        )
    if cfg.size < 1 or cfg.eval_size < 0:
        raise ConfigError(
            f"task '{cfg.name}' has size={cfg.size} eval_size={cfg.eval_size}",
            "in [task]",
            "use task.size >= 1 and task.eval_size >= 0",
        )
    fields = [name for name in DATASETS[cfg.name][1].__dataclass_fields__ if name not in ("seed", "size")]
    for key in cfg.config:
        if key in ("seed", "size"):
            raise ConfigError(
                f"task.config.{key} is not allowed", "in task.config", f"set task.{key} (and task.eval_{key}) instead"
            )
        if key not in fields:
            raise ConfigError(
                f"task '{cfg.name}' has no config key '{key}'",
                "in task.config",
                close_matches(key, fields) or f"valid keys: {', '.join(fields)}",
            )
    return dict(cfg.config)


# --------------------------------------------------------------------------------------------
# local files


class FileTask(Task):
    """Rows of a JSONL or Parquet file, scored by math-verify against the answer column.

    Splits: when the file has a "split" column (train, or test/eval) it decides, and
    ``task.eval_size`` is ignored; otherwise the last ``eval_size`` rows are the eval split. Train
    rows whose question also appears in the eval split are dropped (held out). Item metadata holds
    the row's other columns, "row" (0-based row in the file), "split" and "index".
    """

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.name = cfg.name
        self.reward_version = math_verify_version()
        self._splits = _split_rows(cfg, _read_rows(cfg))

    def split_size(self, split: str) -> int:
        self._check_split(split)
        return len(self._splits[split])

    def _item(self, split: str, position: int) -> TaskItem:
        return self._splits[split][position]

    def score(self, metadata: dict, extracted: str) -> float:
        split, index = self._locate(metadata)
        return math_verify_score(self._splits[split][index].answer, extracted)


def _read_rows(cfg: TaskConfig) -> list[tuple[str, dict]]:
    """``(where, row)`` per data row; ``where`` is "line N" (JSONL, 1-based) or "row N" (Parquet)."""
    if not cfg.path:
        raise ConfigError(
            "task.path is empty", "in [task]", "set task.path to a .jsonl or .parquet file when task.name = 'file'"
        )
    path = Path(cfg.path)
    if not path.is_file():
        raise MissingPathError(f"task file {path} does not exist", "in task.path", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [(f"row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    else:
        raise ConfigError(
            f"task file {path} has unknown extension '{path.suffix}'", "in task.path", "use a .jsonl or .parquet file"
        )
    if not rows:
        raise ConfigError(f"task file {path} has no rows", "in task.path", "add one row per question")
    return rows


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")  # as a file iterates: \u2028 is not a break
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"line {line} is not UTF-8 (byte 0x{exc.object[exc.start]:02x})", f"in {path}", "save the file as UTF-8"
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"line {number} is not JSON ({exc.msg})", f"in {path}", "write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise ConfigError(
                f"line {number} is a JSON {type(row).__name__}, not an object",
                f"in {path}",
                "write one JSON object per line",
            )
        rows.append((f"line {number}", row))
    return rows


def _split_rows(cfg: TaskConfig, rows: list[tuple[str, dict]]) -> dict[str, list[TaskItem]]:
    path = cfg.path
    has_split_column = any("split" in row for _, row in rows)
    fields = (
        [cfg.question_field, cfg.answer_field]
        + ([cfg.id_field] if cfg.id_field else [])
        + (["split"] if has_split_column else [])
    )
    labelled: list[tuple[str, str, dict]] = []  # (split, where, row)
    for number, (where, row) in enumerate(rows):
        for name in fields:
            if row.get(name) is None:
                raise ConfigError(
                    f"{where} has no field '{name}'",
                    f"in {path}",
                    close_matches(name, row) or f"fields present: {', '.join(map(str, row)) or 'none'}",
                )
        if has_split_column:
            split = {"train": "train", "test": "eval", "eval": "eval"}.get(str(row["split"]))
            if split is None:
                raise ConfigError(f"{where} has split '{row['split']}'", f"in {path}", "use train, test or eval")
        else:
            split = "eval" if number >= len(rows) - cfg.eval_size else "train"
        labelled.append((split, where, row))

    held_out = {str(row[cfg.question_field]) for split, _, row in labelled if split == "eval"}
    splits: dict[str, list[TaskItem]] = {"train": [], "eval": []}
    seen_ids: set[str] = set()
    for number, (split, where, row) in enumerate(labelled):
        prompt_id = str(row[cfg.id_field]) if cfg.id_field else f"{number:07d}"
        if prompt_id in seen_ids:
            raise ConfigError(
                f"{where} repeats id '{prompt_id}' of column '{cfg.id_field}'",
                f"in {path}",
                "prompt ids must be unique; fix the file or unset task.id_field",
            )
        seen_ids.add(prompt_id)
        question = str(row[cfg.question_field])
        if split == "train" and question in held_out:
            continue
        extra = {k: v for k, v in row.items() if k not in (cfg.question_field, cfg.answer_field)}
        metadata = {**json_safe(extra), "row": number, "split": split, "index": len(splits[split])}
        splits[split].append(TaskItem(prompt_id, question, str(row[cfg.answer_field]), metadata))
    return splits


# --------------------------------------------------------------------------------------------
# building, prompts, helpers


def build_task(cfg: TaskConfig) -> Task:
    """The task a recipe's [task] table describes; config mistakes fail here, one line each."""
    return FileTask(cfg) if cfg.name == "file" else GymTask(cfg)


def score_completion(
    task: Task, item_or_metadata: TaskItem | dict[str, Any], completion: str, prompt: PromptConfig
) -> tuple[float, str]:
    """Extract the answer from ``completion`` and score it: ``(reward in [0, 1], extracted)``.

    A completion without a complete final answer scores 0.0 (not the task's own score for an empty
    answer, which for some reasoning-gym tasks is a small format credit).
    """
    metadata = item_or_metadata if isinstance(item_or_metadata, dict) else item_or_metadata.metadata
    extracted = extract_answer(completion, prompt)
    if not extracted:
        return 0.0, extracted
    return task.score(metadata, extracted), extracted


def render_prompt(item: TaskItem, prompt: PromptConfig, tokenizer: Any = None) -> str:
    """Prompt text for ``item``: template, instruction, optional chat template, answer prefix.

    body = ``prompt.template`` filled with {question} and {metadata[KEY]}, then the instruction on
    its own line. With a chat template (``chat_template = "always"``, or "auto" and the tokenizer
    has one) the body is the user turn after an optional system turn, with the generation prompt
    added; otherwise the text is system + newline + body. ``prompt.answer_prefix`` comes last.
    """
    try:
        body = prompt.template.format(question=item.question, metadata=item.metadata)
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        reason = f"unknown field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(
            f"prompt.template {prompt.template!r} cannot be filled ({reason})",
            f"for item {item.prompt_id}",
            "use {question} and {metadata[KEY]} with keys the task's metadata has; double literal braces",
        ) from None
    if prompt.instruction:
        body = f"{body}\n{prompt.instruction}"
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt.chat_template == "always" and not has_template:
        raise ConfigError(
            "prompt.chat_template is 'always' but the tokenizer has no chat template",
            "in [prompt]",
            "use 'auto' or 'never', or a tokenizer with a chat template",
        )
    if prompt.chat_template != "never" and has_template:
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
            {"role": "user", "content": body}
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{prompt.system}\n{body}" if prompt.system else body
    return text + prompt.answer_prefix


def json_safe(value: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars and arrays become Python values, tuples and sets
    lists, dict keys strings; anything else unknown becomes its ``str``."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # also turns numpy.str_ into str
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(v) for v in value), key=repr)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return json_safe(value.tolist())
    return str(value)


def _lookup(metadata: dict, dotted: str) -> Any:
    node: Any = metadata
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
