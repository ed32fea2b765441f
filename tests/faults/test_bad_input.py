"""The bad-input catalogue: every command refuses every kind of user mistake the same way (DESIGN §7).

Each case in ``CASES`` builds its inputs, runs the real CLI (``run_cli``: inside the test process,
with the exit code, stdout and stderr its own process would give), and one check holds for all of
them (``assert_refused``): exit code 2; exactly one stderr line ``error: ...`` that names what is
wrong, where, and how to fix it (a regex per case); no traceback; nothing marked complete in the
output directory; every input (artifacts, models, checkpoints) byte for byte as it was.
``len(CASES)`` is the size of the catalogue; every case carries its category and command.

Bad Parquet inputs are corrupted copies of one small rollouts artifact and its scored copy, built
once per module. Where a case needs the manifest to stay valid (so that the column or value check
is the one that fires), its part checksums are recomputed after the damage.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TASK_SETS, run_cli, sets

from rladctl.models.factory import PRESETS
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, part_name
from rladctl.store.files import sha256_file

REQUIRED_CATEGORIES = {
    "malformed-toml", "wrong-type", "unknown-key", "unknown-task", "unknown-objective", "empty-dataset",
    "jsonl-missing-field", "parquet-missing-column", "parquet-mistyped-column", "truncated-parquet",
    "checksum-mismatch", "tokenizer-mismatch", "non-finite-logprobs", "length-mismatch", "k-greater-than-n",
    "model-without-weights", "pickle-only-model", "other-architecture", "prompt-too-long",
    "output-holds-other-run", "wrong-kind", "missing-input", "bad-set-syntax", "bad-option", "output-is-input",
    "bad-output-path", "task-file-not-utf8", "truncated-weights", "non-finite-config", "out-of-range",
    "non-finite-rewards", "duplicated-input",
}  # fmt: skip
COMMANDS = {"init-model", "rollout", "score-teacher", "train", "eval", "run", "compare"}
TINY = ("rollout.max_new_tokens=4",)  # a refused rollout never samples, but keep it cheap if it did


@dataclass
class Call:
    """One CLI invocation and what its one error line must say (``pattern``: what, where, fix)."""

    args: list
    pattern: str
    out: Path | None = None  # must hold no manifest.json (nor weights) afterwards
    keep: tuple[Path, ...] = ()  # inputs that must be unchanged, byte for byte


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    command: str
    build: Callable[[Ctx], Call]


CASES: list[Case] = []


def case(category: str, command: str):
    def register(build: Callable[[Ctx], Call]) -> Callable[[Ctx], Call]:
        CASES.append(Case(build.__name__, category, command, build))
        return build

    return register


@dataclass
class Ctx:
    """What a case builds from: a fresh directory, the session's tiny models, the module's artifacts."""

    tmp: Path
    models: dict[str, Path]
    data: dict[str, Path]
    shared: list[Path] = field(default_factory=list)

    @property
    def student(self) -> Path:
        return self.models["student"]

    @property
    def teacher(self) -> Path:
        return self.models["teacher"]

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def copy(self, src: Path, name: str) -> Path:
        dst = self.tmp / name
        shutil.copytree(src, dst)
        return dst

    def jsonl(self, name: str, rows: list[dict]) -> Path:
        return self.write(name, "".join(json.dumps(row) + "\n" for row in rows))


def q(path) -> str:
    """A path as a regex fragment."""
    return re.escape(str(path))


# --------------------------------------------------------------------------------------------
# damaging artifact copies


def resign(artifact: Path) -> None:
    """Recompute every part's sha256 (and row count) in the manifest, so the manifest is valid again."""
    manifest = json.loads((artifact / MANIFEST).read_text())
    for entry in manifest["parts"]:
        part = artifact / entry["file"]
        entry["sha256"] = sha256_file(part)
    (artifact / MANIFEST).write_text(json.dumps(manifest, indent=2))


def rewrite_part(artifact: Path, change: Callable[[pa.Table], pa.Table], index: int = 0) -> Path:
    """Replace part ``index`` by ``change(part)`` and re-sign the manifest; returns the part's path."""
    part = artifact / part_name(index)
    pq.write_table(change(pq.read_table(part)), part)
    resign(artifact)
    return part


def set_column(table: pa.Table, name: str, values, type_: pa.DataType) -> pa.Table:
    """Replace a column's values (and type), keeping its name and nullability."""
    index = table.schema.get_field_index(name)
    return table.set_column(
        index,
        table.schema.field(index).with_type(type_),
        pa.array(values, type_) if isinstance(values, list) else values,
    )


def edit_row(column: str, row: int, edit: Callable[[list], list], type_=pa.list_(pa.float32())):
    """A ``change`` for ``rewrite_part``: one row's list value in ``column`` replaced by ``edit(value)``."""

    def change(table: pa.Table) -> pa.Table:
        values = table[column].to_pylist()
        values[row] = edit(values[row])
        return set_column(table, column, values, type_)

    return change


def cast_column(column: str, type_: pa.DataType):
    def change(table: pa.Table) -> pa.Table:
        return set_column(table, column, table[column].cast(type_), type_)

    return change


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def swap_used_tokens(model_dir: Path, artifact: Path) -> None:
    """Give two token ids that the artifact's prompts use each other's strings: same size, same
    special tokens, another tokenizer."""
    ids = pq.read_table(artifact / part_name(0), columns=[S.PROMPT_TOKEN_IDS])[S.PROMPT_TOKEN_IDS][0].as_py()
    a, b = sorted(set(ids))[:2]
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    sa, sb = (next(s for s, i in vocab.items() if i == x) for x in (a, b))
    vocab[sa], vocab[sb] = b, a
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer))


def other_architecture(ctx: Ctx, name: str) -> Path:
    """The student's weights under the config.json of a wider preset (tiny-4m shapes)."""
    model = ctx.copy(ctx.student, name)
    config = json.loads((model / "config.json").read_text())
    wider = PRESETS["tiny-4m"]
    config.update(
        {
            k: wider[k]
            for k in ("hidden_size", "head_dim", "intermediate_size", "num_attention_heads", "num_key_value_heads")
        }
    )
    (model / "config.json").write_text(json.dumps(config))
    return model


def deeper(ctx: Ctx, name: str) -> Path:
    """The student's 4 layers of weights under a config.json that asks for 6."""
    model = ctx.copy(ctx.student, name)
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] = 6
    if config.get("layer_types"):
        config["layer_types"] = config["layer_types"][:1] * 6
    (model / "config.json").write_text(json.dumps(config))
    return model


# --------------------------------------------------------------------------------------------
# command lines


def rollout(ctx: Ctx, *extra, model=None, out="r") -> list:
    return [
        "rollout",
        "--model",
        model or ctx.student,
        "--out",
        ctx.tmp / out,
        "-n",
        "2",
        "-G",
        "2",
        *sets(*TASK_SETS, *TINY),
        *extra,
    ]


def score(ctx: Ctx, inp, *extra, teacher=None, out="s") -> list:
    return ["score-teacher", "--teacher", teacher or ctx.teacher, "--input", inp, "--out", ctx.tmp / out, *extra]


def train(ctx: Ctx, inp, *extra, model=None, out="ckpt") -> list:
    return ["train", "--model", model or ctx.student, "--input", inp, "--out", ctx.tmp / out, *extra]


def evaluate(ctx: Ctx, *extra, out="eval") -> list:
    return ["eval", "--out", ctx.tmp / out, *sets(*TASK_SETS, "eval.max_new_tokens=4"), *extra]


def run_recipe(ctx: Ctx) -> Path:
    """A recipe the run loop accepts, up to the one mistake a case adds."""
    return ctx.write(
        "run.toml",
        "\n".join(
            [
                "[task]",
                'name = "chain_sum"',
                "eval_size = 16",
                "config = { min_terms = 2, max_terms = 2 }",
                "[run]",
                f'dir = "{ctx.tmp / "run"}"',
                f'student = "{ctx.student}"',
                f'teacher = "{ctx.teacher}"',
                "iterations = 1",
            ]
        )
        + "\n",
    )


def compare(ctx: Ctx, recipe, *extra) -> list:
    return ["compare", recipe, "--seeds", "1", "--out", ctx.tmp / "cmp", *extra]


# --------------------------------------------------------------------------------------------
# the catalogue: recipes and --set


@case("malformed-toml", "rollout")
def rollout_recipe_is_not_toml(ctx):
    recipe = ctx.write("bad.toml", "[rollout\nseed = 1\n")
    return Call(
        ["rollout", "-r", recipe, "--model", ctx.student, "--out", ctx.tmp / "r"],
        rf"recipe {q(recipe)} is not valid TOML \(.*line 1.*\)\. fix the TOML syntax",
        ctx.tmp / "r",
        (recipe,),
    )


@case("malformed-toml", "run")
def run_recipe_is_not_toml(ctx):
    recipe = ctx.write("bad.toml", '[run]\ndir = "unterminated\n')
    return Call(
        ["run", recipe], rf"recipe {q(recipe)} is not valid TOML \(.*line 2.*\)\. fix the TOML syntax", keep=(recipe,)
    )


@case("malformed-toml", "compare")
def compare_recipe_is_not_toml(ctx):
    recipe = ctx.write("bad.toml", "[train]\nlr = 1e-4 1e-5\n")
    return Call(
        compare(ctx, recipe), rf"recipe {q(recipe)} is not valid TOML .*fix the TOML syntax", ctx.tmp / "cmp", (recipe,)
    )


@case("wrong-type", "train")
def train_lr_is_a_string(ctx):
    recipe = ctx.write("r.toml", '[train]\nlr = "fast"\n')
    return Call(
        ["train", "-r", recipe, "--model", ctx.student, "--input", ctx.data["scored"], "--out", ctx.tmp / "ckpt"],
        rf"recipe key 'train\.lr' must be float, got str 'fast', in {q(recipe)}\. give train\.lr a value of type float",
        ctx.tmp / "ckpt",
    )


@case("wrong-type", "eval")
def eval_n_is_a_bool(ctx):
    return Call(
        evaluate(ctx, "--model", ctx.student, *sets("eval.n=true")),
        r"recipe key 'eval\.n' must be int, got bool True, in --set eval\.n=true\. give eval\.n a value of type int",
        ctx.tmp / "eval",
    )


@case("wrong-type", "rollout")
def rollout_model_is_a_number(ctx):
    return Call(
        ["rollout", "--out", ctx.tmp / "r", *sets("rollout.model=7")],
        r"recipe key 'rollout\.model' must be str, got int 7, in --set rollout\.model=7\. quote it .*rollout\.model=\"7\"",
        ctx.tmp / "r",
    )


@case("wrong-type", "compare")
def compare_iterations_is_a_string(ctx):
    recipe = ctx.write("r.toml", '[run]\niterations = "two"\n')
    return Call(
        compare(ctx, recipe),
        rf"recipe key 'run\.iterations' must be int, got str 'two', in {q(recipe)}\. give run\.iterations a value of type int",
        ctx.tmp / "cmp",
    )


@case("wrong-type", "score-teacher")
def score_backend_is_not_a_choice(ctx):
    return Call(
        score(ctx, ctx.data["rollouts"], *sets("score_teacher.backend=vlm")),
        r"recipe key 'score_teacher\.backend' is 'vlm', in --set score_teacher\.backend=vlm\. did you mean 'vllm'\?",
        ctx.tmp / "s",
    )


@case("unknown-key", "score-teacher")
def score_key_is_misspelt(ctx):
    return Call(
        score(ctx, ctx.data["rollouts"], *sets("score_teacher.temprature=0.5")),
        r"unknown recipe key 'score_teacher\.temprature', in --set score_teacher\.temprature=0\.5\. did you mean 'temperature'\?",
        ctx.tmp / "s",
    )


@case("unknown-key", "compare")
def compare_recipe_key_is_misspelt(ctx):
    recipe = ctx.write("r.toml", "[rollout]\nnum_prompt = 4\n")
    return Call(
        compare(ctx, recipe),
        rf"unknown recipe key 'rollout\.num_prompt', in {q(recipe)}\. did you mean 'num_prompts'\?",
        ctx.tmp / "cmp",
    )


@case("unknown-key", "init-model")
def init_model_recipe_table_is_misspelt(ctx):
    recipe = ctx.write("r.toml", "[rolout]\nseed = 1\n")
    return Call(
        ["init-model", ctx.tmp / "m", "--preset", "tiny-1m", "-r", recipe],
        rf"unknown recipe table \[rolout\], in {q(recipe)}\. did you mean 'rollout'\?",
        ctx.tmp / "m",
    )


@case("unknown-key", "run")
def run_objective_key_is_misspelt(ctx):
    return Call(
        ["run", run_recipe(ctx), *sets("objective.alpah=0.3")],
        r"unknown recipe key 'objective\.alpah', in --set objective\.alpah=0\.3\. did you mean 'alpha'\?",
        ctx.tmp / "run",
    )


@case("unknown-key", "init-model")
def init_model_preset_is_unknown(ctx):
    return Call(
        ["init-model", ctx.tmp / "m", "--preset", "tiny-2m", "--tokenizer-from", ctx.student],
        r"unknown model preset 'tiny-2m', in --preset\. did you mean 'tiny-\dm'\?",
        ctx.tmp / "m",
    )


@case("bad-option", "eval")
def eval_pass_at_is_not_a_number(ctx):
    return Call(
        ["eval", "--model", ctx.student, "--out", ctx.tmp / "e", "--pass-at", "abc"],
        r"rladctl eval: Invalid value for '--pass-at' / '-k': .*integer.*\. Run rladctl eval --help for the options\.$",
        ctx.tmp / "e",
    )


@case("bad-option", "rollout")
def rollout_option_does_not_exist(ctx):
    return Call(
        ["rollout", "--model", ctx.student, "--out", ctx.tmp / "r", "--prompts", "4"],
        r"rladctl rollout: No such option: --prompts.*\. Run rladctl rollout --help for the options\.$",
        ctx.tmp / "r",
    )


@case("bad-set-syntax", "rollout")
def rollout_set_has_no_equals(ctx):
    return Call(
        rollout(ctx, "--set", "rollout.seed"),
        r"override 'rollout\.seed' has no '=', in --set\. write it as table\.key=value",
        ctx.tmp / "r",
    )


@case("bad-set-syntax", "train")
def train_set_names_no_table(ctx):
    return Call(
        train(ctx, ctx.data["scored"], "--set", "lr=1e-3"),
        r"override key 'lr' must name a table and a key, in --set\. e\.g\. rollout\.temperature=0\.7",
        ctx.tmp / "ckpt",
    )


@case("bad-set-syntax", "init-model")
def init_model_set_has_an_empty_key(ctx):
    return Call(
        ["init-model", ctx.tmp / "m", "--set", "task..name=x"],
        r"override key 'task\.\.name' must name a table and a key, in --set\. e\.g\. rollout\.temperature=0\.7",
        ctx.tmp / "m",
    )


@case("bad-set-syntax", "compare")
def compare_set_goes_through_a_value(ctx):
    recipe = ctx.write("r.toml", "[run]\niterations = 2\n")
    return Call(
        compare(ctx, recipe, "--set", "run.iterations.max=3"),
        r"override 'run\.iterations\.max' goes through a non-table value, in --set\. check the key path",
        ctx.tmp / "cmp",
    )


# --------------------------------------------------------------------------------------------
# tasks, objectives, data files


@case("unknown-task", "rollout")
def rollout_task_is_misspelt(ctx):
    return Call(
        rollout(ctx, *sets("task.name=chain_summ")),
        r"unknown task 'chain_summ', in task\.name\. did you mean 'chain_sum'\?",
        ctx.tmp / "r",
    )


@case("unknown-task", "init-model")
def init_model_task_is_misspelt(ctx):
    return Call(
        ["init-model", ctx.tmp / "m", "--preset", "tiny-1m", "--task", "knight_knaves"],
        r"unknown task 'knight_knaves', in task\.name\. did you mean 'knights_knaves'\?",
        ctx.tmp / "m",
    )


@case("unknown-task", "eval")
def eval_task_is_unknown(ctx):
    return Call(
        evaluate(ctx, "--model", ctx.student, "--pass-at", "1", *sets("task.name=sudokuu")),
        r"unknown task 'sudokuu', in task\.name\. did you mean 'sudoku'\?",
        ctx.tmp / "eval",
    )


@case("unknown-objective", "train")
def train_objective_is_misspelt(ctx):
    return Call(
        train(ctx, ctx.data["scored"], "--objective", "trdd"),
        r"unknown objective 'trdd', in \[objective\] name\. did you mean 'trrd'\? valid objectives: grpo, kdrl, opd, opd_grpo, sft, trrd",
        ctx.tmp / "ckpt",
    )


@case("unknown-objective", "run")
def run_objective_is_misspelt(ctx):
    return Call(
        ["run", run_recipe(ctx), *sets('objective.name="gpro"')],
        r"unknown objective 'gpro', in \[objective\] name\. did you mean 'grpo'\?",
        ctx.tmp / "run",
    )


@case("unknown-objective", "compare")
def compare_method_is_unknown(ctx):
    recipe = ctx.write("r.toml", "[run]\niterations = 1\n")
    return Call(
        compare(ctx, recipe, "--methods", "rlad,kdrll"),
        r"unknown method 'kdrll', in --methods\. choose from rlad, grpo, kdrl, offline, opd, opd_grpo",
        ctx.tmp / "cmp",
    )


@case("empty-dataset", "rollout")
def rollout_task_file_has_no_rows(ctx):
    data = ctx.write("empty.jsonl", "\n")
    return Call(
        rollout(ctx, *sets("task.name=file", f'task.path="{data}"')),
        rf"task file {q(data)} has no rows, in task\.path\. add one row per question",
        ctx.tmp / "r",
        (data,),
    )


@case("empty-dataset", "rollout")
def rollout_asks_for_no_prompts(ctx):
    return Call(
        rollout(ctx, "-n", "0"),
        r"no prompts to sample \(the number of prompts is 0\), in rollout\.num_prompts\. set rollout\.num_prompts >= 1",
        ctx.tmp / "r",
    )


@case("empty-dataset", "eval")
def eval_has_no_held_out_prompts(ctx):
    return Call(
        evaluate(ctx, "--model", ctx.student, "--pass-at", "1", *sets("task.eval_size=0")),
        r"no prompts to sample \(the number of prompts is 0\), in eval\.num_prompts \(default task\.eval_size\)\. set eval\.num_prompts >= 1",
        ctx.tmp / "eval",
    )


@case("empty-dataset", "train")
def train_input_has_no_rows(ctx):
    return Call(
        train(ctx, ctx.data["empty"], "--objective", "grpo"),
        rf"training artifact {q(ctx.data['empty'])} has no rows\. train on an artifact with rows: re-run rladctl rollout with at least one prompt",
        ctx.tmp / "ckpt",
    )


@case("empty-dataset", "score-teacher")
def score_input_has_no_rows(ctx):
    return Call(
        score(ctx, ctx.data["empty"]),
        rf"rollouts artifact {q(ctx.data['empty'])} has no rows\. score an artifact with rows: re-run rladctl rollout with at least one prompt",
        ctx.tmp / "s",
    )


@case("empty-dataset", "eval")
def eval_from_an_artifact_without_rows(ctx):
    return Call(
        evaluate(ctx, "--from", ctx.data["empty"], "--pass-at", "1"),
        rf"eval artifact {q(ctx.data['empty'])} has no rows\. score an artifact with rows: re-run rladctl rollout or eval",
        ctx.tmp / "eval",
    )


MATH = [
    {"id": "q0", "question": "What is 2 + 3?", "answer": "5"},
    {"id": "q1", "question": "What is 4 * 4?", "answer": "16"},
]


@case("jsonl-missing-field", "rollout")
def rollout_jsonl_row_lacks_its_answer(ctx):
    data = ctx.jsonl("math.jsonl", [MATH[0], {"id": "q1", "question": "What is 4 * 4?"}])
    return Call(
        rollout(ctx, *sets("task.name=file", f'task.path="{data}"', "task.eval_size=0")),
        rf"line 2 has no field 'answer', in {q(data)}\. fields present: id, question",
        ctx.tmp / "r",
        (data,),
    )


@case("jsonl-missing-field", "eval")
def eval_jsonl_question_field_is_misspelt(ctx):
    data = ctx.jsonl("math.jsonl", [{"id": "q0", "qestion": "What is 2 + 3?", "answer": "5"}, MATH[1]])
    return Call(
        evaluate(ctx, "--model", ctx.student, "--pass-at", "1", *sets("task.name=file", f'task.path="{data}"')),
        rf"line 1 has no field 'question', in {q(data)}\. did you mean 'qestion'\?",
        ctx.tmp / "eval",
        (data,),
    )


@case("jsonl-missing-field", "rollout")
def rollout_jsonl_line_is_not_json(ctx):
    data = ctx.write("math.jsonl", json.dumps(MATH[0]) + "\n{'id': 'q1'}\n")
    return Call(
        rollout(ctx, *sets("task.name=file", f'task.path="{data}"', "task.eval_size=0")),
        rf"line 2 is not JSON \(.*\), in {q(data)}\. write one JSON object per line",
        ctx.tmp / "r",
        (data,),
    )


@case("non-finite-config", "rollout")
def rollout_temperature_is_nan(ctx):
    return Call(
        rollout(ctx, *sets("rollout.temperature=nan")),
        r"recipe key 'rollout\.temperature' is nan, in --set rollout\.temperature=nan\. give rollout\.temperature a finite number",
        ctx.tmp / "r",
    )


@case("out-of-range", "rollout")
def rollout_temperature_is_zero(ctx):
    return Call(
        rollout(ctx, *sets("rollout.temperature=0")),
        r"recipe key 'rollout\.temperature' is 0\.0, in --set rollout\.temperature=0\. rollout\.temperature must be > 0",
        ctx.tmp / "r",
    )


@case("out-of-range", "score-teacher")
def score_top_k_is_negative(ctx):
    return Call(
        score(ctx, ctx.data["rollouts"], "--top-k", "-3"),
        r"recipe key 'score_teacher\.top_k' is -3, in --set score_teacher\.top_k=-3\. score_teacher\.top_k must be >= 0",
        ctx.tmp / "s",
    )


@case("task-file-not-utf8", "rollout")
def rollout_jsonl_is_not_utf8(ctx):
    data = ctx.tmp / "math.jsonl"
    data.write_bytes(json.dumps(MATH[0]).encode() + b'\n{"question": "caf\xe9", "answer": "1"}\n')  # Latin-1
    return Call(
        rollout(ctx, *sets("task.name=file", f'task.path="{data}"', "task.eval_size=0")),
        rf"line 2 is not UTF-8 \(byte 0xe9\), in {q(data)}\. save the file as UTF-8",
        ctx.tmp / "r",
        (data,),
    )


@case("truncated-weights", "rollout")
def rollout_model_weights_are_truncated(ctx):
    model = ctx.copy(ctx.student, "m")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return Call(
        rollout(ctx, model=model),
        rf"cannot load model {q(model)}: its weights are damaged \(.*\)\. copy or save the model again",
        ctx.tmp / "r",
        (model,),
    )


@case("bad-output-path", "rollout")
def rollout_out_is_a_symlink_loop(ctx):
    (ctx.tmp / "a").symlink_to(ctx.tmp / "b")
    (ctx.tmp / "b").symlink_to(ctx.tmp / "a")
    return Call(
        rollout(ctx, out="a"),
        rf"cannot write {q(ctx.tmp / 'a')} \(Too many levels of symbolic links\)\. the path runs through a symbolic-link loop",
    )


@case("bad-output-path", "rollout")
def rollout_out_is_a_regular_file(ctx):
    out = ctx.write("r", "notes\n")
    return Call(
        rollout(ctx),
        rf"cannot write {q(out)} \(File exists\)\. a file stands where a directory is needed: choose another output directory",
        keep=(out,),
    )


@case("prompt-too-long", "rollout")
def rollout_prompt_is_longer_than_the_context(ctx):
    data = ctx.jsonl("long.jsonl", [{"question": "1" * 2100, "answer": "1"}])  # digits are one token each
    return Call(
        rollout(
            ctx,
            "-n",
            "1",
            *sets("task.name=file", f'task.path="{data}"', "task.eval_size=0", 'prompt.template="{question}"'),
        ),
        rf"prompt 0000000 has 21\d\d tokens; with max_new_tokens 4 it exceeds the context of 2048 tokens, of model {q(ctx.student)}\. "
        r"lower max_new_tokens, shorten the prompt",
        ctx.tmp / "r",
        (data,),
    )


@case("prompt-too-long", "eval")
def eval_max_new_tokens_exceed_the_context(ctx):
    return Call(
        evaluate(ctx, "--model", ctx.student, "--pass-at", "1", *sets("eval.max_new_tokens=4096")),
        rf"prompt chain_sum/eval/\d+ has \d+ tokens; with max_new_tokens 4096 it exceeds the context of 2048 tokens, of model {q(ctx.student)}\. lower max_new_tokens",
        ctx.tmp / "eval",
    )


# --------------------------------------------------------------------------------------------
# Parquet inputs


@case("parquet-missing-column", "score-teacher")
def score_input_lacks_the_reward_column(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    part = rewrite_part(inp, lambda t: t.drop_columns([S.REWARD]))
    return Call(
        score(ctx, inp),
        rf"column 'reward' is missing, in {q(part)}\. write the artifact with rladctl's schema",
        ctx.tmp / "s",
        (inp,),
    )


@case("parquet-missing-column", "train")
def train_input_lacks_teacher_logprobs(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    part = rewrite_part(inp, lambda t: t.drop_columns([S.TEACHER_LOGPROBS]), index=1)
    return Call(
        train(ctx, inp),
        rf"column 'teacher_logprobs' is missing, in {q(part)}\. write the artifact with rladctl's schema",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("parquet-missing-column", "eval")
def eval_input_lacks_prompt_ids(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    part = rewrite_part(inp, lambda t: t.drop_columns([S.PROMPT_ID]))
    return Call(
        evaluate(ctx, "--from", inp, "--pass-at", "1"),
        rf"column 'prompt_id' is missing, in {q(part)}\. write the artifact",
        ctx.tmp / "eval",
        (inp,),
    )


@case("parquet-mistyped-column", "eval")
def eval_input_reward_is_a_string(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    part = rewrite_part(inp, cast_column(S.REWARD, pa.string()))
    return Call(
        evaluate(ctx, "--from", inp, "--pass-at", "1"),
        rf"column 'reward' has type string, expected float, in {q(part)}\. cast the column to the schema's type",
        ctx.tmp / "eval",
        (inp,),
    )


@case("parquet-mistyped-column", "train")
def train_input_teacher_logprobs_are_double(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    part = rewrite_part(inp, cast_column(S.TEACHER_LOGPROBS, pa.list_(pa.float64())))
    return Call(
        train(ctx, inp),
        rf"column 'teacher_logprobs' has type list<\w+: double>, expected list<item: float>, in {q(part)}\. cast the column",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("parquet-mistyped-column", "score-teacher")
def score_input_token_ids_are_int64(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    part = rewrite_part(inp, cast_column(S.COMPLETION_TOKEN_IDS, pa.list_(pa.int64())))
    return Call(
        score(ctx, inp),
        rf"column 'completion_token_ids' has type list<\w+: int64>, expected list<item: int32>, in {q(part)}\. cast the column",
        ctx.tmp / "s",
        (inp,),
    )


@case("truncated-parquet", "score-teacher")
def score_input_part_is_truncated(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    truncate(inp / part_name(1))
    resign(inp)
    return Call(
        score(ctx, inp),
        rf"artifact part {q(inp / part_name(1))} is not a readable Parquet file \(.*\)\. re-create the artifact with --overwrite",
        ctx.tmp / "s",
        (inp,),
    )


@case("truncated-parquet", "eval")
def eval_input_part_is_truncated(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    truncate(inp / part_name(0))
    resign(inp)
    return Call(
        evaluate(ctx, "--from", inp, "--pass-at", "1"),
        rf"artifact part {q(inp / part_name(0))} is not a readable Parquet file .*re-create the artifact",
        ctx.tmp / "eval",
        (inp,),
    )


@case("truncated-parquet", "train")
def train_input_part_is_truncated(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    truncate(inp / part_name(0))
    resign(inp)
    return Call(
        train(ctx, inp),
        rf"artifact part {q(inp / part_name(0))} is not a readable Parquet file .*re-create the artifact",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("checksum-mismatch", "train")
def train_input_part_has_a_flipped_byte(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    flip_byte(inp / part_name(1))
    return Call(
        train(ctx, inp),
        rf"artifact part {q(inp / part_name(1))} does not match its manifest checksum\. .*re-create the artifact with --overwrite",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("checksum-mismatch", "score-teacher")
def score_input_part_has_a_flipped_byte(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    flip_byte(inp / part_name(0))
    return Call(
        score(ctx, inp),
        rf"artifact part {q(inp / part_name(0))} does not match its manifest checksum\. .*re-create the artifact",
        ctx.tmp / "s",
        (inp,),
    )


@case("checksum-mismatch", "eval")
def eval_input_part_has_a_flipped_byte(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    flip_byte(inp / part_name(1))
    return Call(
        evaluate(ctx, "--from", inp, "--pass-at", "1"),
        rf"artifact part {q(inp / part_name(1))} does not match its manifest checksum\. .*re-create the artifact",
        ctx.tmp / "eval",
        (inp,),
    )


@case("non-finite-logprobs", "score-teacher")
def score_input_sampler_logprobs_hold_nan(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    part = rewrite_part(inp, edit_row(S.SAMPLER_LOGPROBS, 1, lambda v: [float("nan"), *v[1:]]))
    return Call(
        score(ctx, inp),
        rf"column 'sampler_logprobs' holds NaN or inf \(first in row 1, prompt_id .*\), in {q(part)}\. re-create the artifact; log-probs must be finite",
        ctx.tmp / "s",
        (inp,),
    )


@case("duplicated-input", "train")
def train_input_given_twice(ctx):
    return Call(
        train(ctx, ctx.data["scored"], "--input", ctx.data["scored"]),
        rf"training input {q(ctx.data['scored'])} holds the same rows as {q(ctx.data['scored'])}, in train\.inputs\. "
        r"pass each artifact once",
        ctx.tmp / "ckpt",
    )


@case("non-finite-rewards", "eval")
def eval_from_artifact_with_nan_reward(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    rewrite_part(inp, edit_row(S.REWARD, 1, lambda v: float("nan"), pa.float32()))
    return Call(
        evaluate(ctx, "--from", inp, "--pass-at", "1"),
        rf"column 'reward' holds nan in row 1 \(prompt_id .*\), in {q(inp)}\. re-create the artifact; rewards must be finite numbers",
        ctx.tmp / "eval",
        (inp,),
    )


@case("non-finite-logprobs", "train")
def train_input_teacher_logprobs_hold_inf(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    rewrite_part(inp, edit_row(S.TEACHER_LOGPROBS, 2, lambda v: [*v[:-1], float("-inf")]))
    return Call(
        train(ctx, inp),
        rf"column 'teacher_logprobs' holds NaN or inf \(first in row 2, prompt_id .*\), in {q(inp)}\. re-create the artifact; log-probs must be finite",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("non-finite-logprobs", "train")
def train_input_sampler_logprobs_hold_nan(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    rewrite_part(inp, edit_row(S.SAMPLER_LOGPROBS, 0, lambda v: [float("nan")] * len(v)), index=1)
    return Call(
        train(ctx, inp, "--objective", "grpo"),
        rf"column 'sampler_logprobs' holds NaN or inf \(first in row \d+, prompt_id .*\), in {q(inp)}\. re-create the artifact",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("length-mismatch", "train")
def train_input_sampler_logprobs_are_one_short(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    rewrite_part(inp, edit_row(S.SAMPLER_LOGPROBS, 0, lambda v: v[:-1]))
    return Call(
        train(ctx, inp),
        rf"row 0 \(prompt_id .*, sample 0\) has \d+ values in 'sampler_logprobs' but \d+ completion tokens, in {q(inp)}\. "
        r"re-create the artifact; per-token columns must match completion_token_ids",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("length-mismatch", "score-teacher")
def score_input_sampler_logprobs_are_one_long(ctx):
    inp = ctx.copy(ctx.data["rollouts"], "r")
    part = rewrite_part(inp, edit_row(S.SAMPLER_LOGPROBS, 3, lambda v: [*v, -1.0]), index=1)
    return Call(
        score(ctx, inp),
        rf"row 3 \(prompt_id .*, sample 1\) has \d+ values in 'sampler_logprobs' but \d+ completion tokens, in {q(part)}\. re-create the artifact",
        ctx.tmp / "s",
        (inp,),
    )


@case("length-mismatch", "train")
def train_input_teacher_logprobs_are_one_long(ctx):
    inp = ctx.copy(ctx.data["scored"], "sc")
    rewrite_part(inp, edit_row(S.TEACHER_LOGPROBS, 1, lambda v: [*v, -1.0]))
    return Call(
        train(ctx, inp, "--objective", "kdrl"),
        rf"row 1 \(.*\) has \d+ values in 'teacher_logprobs' but \d+ completion tokens, in {q(inp)}\. re-create the artifact",
        ctx.tmp / "ckpt",
        (inp,),
    )


@case("wrong-kind", "score-teacher")
def score_input_is_already_scored(ctx):
    return Call(
        score(ctx, ctx.data["scored"]),
        rf"rollouts artifact {q(ctx.data['scored'])} is of kind 'scored'\. this command needs rollouts",
        ctx.tmp / "s",
    )


@case("wrong-kind", "train")
def train_trrd_on_unscored_rollouts(ctx):
    return Call(
        train(ctx, ctx.data["rollouts"], "--objective", "trrd"),
        rf"objective 'trrd' needs teacher log-probs but {q(ctx.data['rollouts'])} is an unscored rollouts artifact\. run rladctl score-teacher on it first",
        ctx.tmp / "ckpt",
    )


@case("wrong-kind", "eval")
def eval_from_a_checkpoint(ctx):
    return Call(
        evaluate(ctx, "--from", ctx.data["checkpoint"], "--pass-at", "1"),
        rf"eval artifact {q(ctx.data['checkpoint'])} is of kind 'checkpoint'\. this command needs rollouts or scored or eval",
        ctx.tmp / "eval",
    )


@case("wrong-kind", "rollout")
def rollout_model_is_an_artifact(ctx):
    return Call(
        rollout(ctx, model=ctx.data["rollouts"]),
        rf"directory {q(ctx.data['rollouts'])} has no tokenizer files \(tokenizer\.json\)\. point at a model directory",
        ctx.tmp / "r",
    )


@case("k-greater-than-n", "eval")
def eval_pass_at_exceeds_the_samples(ctx):
    return Call(
        evaluate(ctx, "--model", ctx.student, "--pass-at", "8", "--n", "4"),
        r"pass@8 needs at least 8 samples per prompt but eval\.n is 4\. set eval\.n >= 8 or lower --pass-at",
        ctx.tmp / "eval",
    )


@case("k-greater-than-n", "eval")
def eval_from_pass_at_exceeds_the_artifact_samples(ctx):
    return Call(
        evaluate(ctx, "--from", ctx.data["rollouts"], "--pass-at", "4"),
        rf"pass@4 needs k <= n samples per prompt, got n=2, in {q(ctx.data['rollouts'])}\. Sample more per prompt \(eval\.n\) or lower --pass-at",
        ctx.tmp / "eval",
    )


@case("k-greater-than-n", "run")
def run_pass_at_exceeds_the_samples(ctx):
    return Call(
        ["run", run_recipe(ctx), *sets("eval.pass_at=4", "eval.n=2")],
        r"pass@4 needs at least 4 samples per prompt but eval\.n is 2\. set eval\.n >= 4 or lower",
        ctx.tmp / "run",
    )


# --------------------------------------------------------------------------------------------
# models and tokenizers


@case("tokenizer-mismatch", "score-teacher")
def score_teacher_has_another_tokenizer(ctx):
    teacher = ctx.copy(ctx.teacher, "teacher")
    swap_used_tokens(teacher, ctx.data["rollouts"])
    return Call(
        score(ctx, ctx.data["rollouts"], teacher=teacher),
        rf"tokenizers differ at id \d+: .* vs .*, between the student {q(ctx.student)} and the teacher {q(teacher)}\. score with a teacher that shares the student's tokenizer",
        ctx.tmp / "s",
        (teacher,),
    )


@case("tokenizer-mismatch", "train")
def train_student_has_another_tokenizer(ctx):
    student = ctx.copy(ctx.student, "student")
    swap_used_tokens(student, ctx.data["rollouts"])
    return Call(
        train(ctx, ctx.data["scored"], model=student),
        rf"tokenizers differ at id \d+: .* vs .*, between the model that sampled {q(ctx.data['scored'])} \({q(ctx.student)}\) and the student {q(student)}\. "
        r"train the model that produced the rollouts, or one sharing its tokenizer",
        ctx.tmp / "ckpt",
        (student,),
    )


@case("model-without-weights", "rollout")
def rollout_model_has_no_weights(ctx):
    model = ctx.copy(ctx.student, "student")
    (model / "model.safetensors").unlink()
    return Call(
        rollout(ctx, model=model),
        rf"model directory {q(model)} has no weights \(model\.safetensors\)\. .*point at a complete model directory",
        ctx.tmp / "r",
        (model,),
    )


@case("model-without-weights", "train")
def train_model_has_no_weights(ctx):
    model = ctx.copy(ctx.student, "student")
    (model / "model.safetensors").unlink()
    return Call(
        train(ctx, ctx.data["scored"], model=model),
        rf"model directory {q(model)} has no weights \(model\.safetensors\)\. rerun the stage that writes it, or point at a complete model directory",
        ctx.tmp / "ckpt",
        (model,),
    )


@case("pickle-only-model", "score-teacher")
def score_teacher_has_only_pickle_weights(ctx):
    teacher = ctx.copy(ctx.teacher, "teacher")
    (teacher / "model.safetensors").rename(teacher / "pytorch_model.bin")
    return Call(
        score(ctx, ctx.data["rollouts"], teacher=teacher),
        rf"model directory {q(teacher)} has only pickle weights \(pytorch_model\.bin\), which can run code when loaded\. convert them to safetensors",
        ctx.tmp / "s",
        (teacher,),
    )


@case("pickle-only-model", "eval")
def eval_model_has_only_pickle_weights(ctx):
    model = ctx.copy(ctx.student, "student")
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    return Call(
        evaluate(ctx, "--model", model, "--pass-at", "1"),
        rf"model directory {q(model)} has only pickle weights \(pytorch_model\.bin\).*convert them to safetensors",
        ctx.tmp / "eval",
        (model,),
    )


@case("other-architecture", "rollout")
def rollout_weights_do_not_fit_the_config(ctx):
    model = other_architecture(ctx, "student")
    return Call(
        rollout(ctx, model=model),
        rf"the weights in {q(model)} do not fit its config\.json \(.* is \[.*\] in the weights but \[.*\] in the config's architecture\)\. "
        r"pair config\.json with the weights it was saved with",
        ctx.tmp / "r",
        (model,),
    )


@case("other-architecture", "train")
def train_weights_do_not_fit_the_config(ctx):
    model = other_architecture(ctx, "student")
    return Call(
        train(ctx, ctx.data["scored"], model=model),
        rf"the weights in {q(model)} do not fit its config\.json .*pair config\.json with the weights",
        ctx.tmp / "ckpt",
        (model,),
    )


@case("other-architecture", "eval")
def eval_config_asks_for_more_layers_than_the_weights_hold(ctx):
    model = deeper(ctx, "student")
    return Call(
        evaluate(ctx, "--model", model, "--pass-at", "1"),
        rf"the weights in {q(model)} do not fit its config\.json \(\d+ tensors the config's architecture needs are not in the weights, e\.g\. model\.layers\.[45]\..*\)\. "
        r"pair config\.json with the weights",
        ctx.tmp / "eval",
        (model,),
    )


@case("missing-input", "score-teacher")
def score_input_does_not_exist(ctx):
    return Call(
        score(ctx, ctx.tmp / "nope"),
        rf"rollouts artifact {q(ctx.tmp / 'nope')} does not exist\. check the path, or run the stage that writes it",
        ctx.tmp / "s",
    )


@case("missing-input", "train")
def train_model_does_not_exist(ctx):
    return Call(
        train(ctx, ctx.data["scored"], model=ctx.tmp / "nope"),
        rf"model path {q(ctx.tmp / 'nope')} does not exist\. check the path",
        ctx.tmp / "ckpt",
    )


@case("missing-input", "eval")
def eval_from_does_not_exist(ctx):
    return Call(
        evaluate(ctx, "--from", ctx.tmp / "nope", "--pass-at", "1"),
        rf"eval artifact {q(ctx.tmp / 'nope')} does not exist\. check the path",
        ctx.tmp / "eval",
    )


@case("missing-input", "run")
def run_student_does_not_exist(ctx):
    return Call(
        ["run", run_recipe(ctx), *sets(f'run.student="{ctx.tmp / "nope"}"')],
        rf"model path {q(ctx.tmp / 'nope')} does not exist\. check the path",
        ctx.tmp / "run",
    )


@case("missing-input", "run")
def run_recipe_does_not_exist(ctx):
    return Call(
        ["run", ctx.tmp / "nope.toml"],
        rf"recipe {q(ctx.tmp / 'nope.toml')} does not exist\. pass the path of a \.toml recipe",
    )


@case("missing-input", "init-model")
def init_model_tokenizer_source_does_not_exist(ctx):
    return Call(
        ["init-model", ctx.tmp / "m", "--preset", "tiny-1m", "--tokenizer-from", ctx.tmp / "nope"],
        rf"model path {q(ctx.tmp / 'nope')} does not exist\. check the path",
        ctx.tmp / "m",
    )


# --------------------------------------------------------------------------------------------
# outputs that hold something else


@case("output-holds-other-run", "score-teacher")
def score_out_holds_a_rollouts_artifact(ctx):
    out = ctx.copy(ctx.data["rollouts"], "other")
    return Call(
        score(ctx, ctx.data["rollouts"], out="other"),
        rf"output directory {q(out)} holds a complete artifact from a different run\. choose another output directory, or pass --overwrite",
        keep=(out,),
    )


@case("output-holds-other-run", "rollout")
def rollout_out_holds_a_scored_artifact(ctx):
    out = ctx.copy(ctx.data["scored"], "other")
    return Call(
        rollout(ctx, out="other"),
        rf"output directory {q(out)} holds a complete artifact from a different run\. .*--overwrite",
        keep=(out,),
    )


@case("output-holds-other-run", "train")
def train_out_holds_another_checkpoint(ctx):
    out = ctx.copy(ctx.data["checkpoint"], "other")
    return Call(
        train(ctx, ctx.data["scored"], out="other"),
        rf"output directory {q(out)} holds a checkpoint from a different run\. choose another --out, or pass --overwrite",
        keep=(out,),
    )


@case("output-holds-other-run", "init-model")
def init_model_out_holds_a_model(ctx):
    out = ctx.copy(ctx.student, "other")
    return Call(
        ["init-model", out, "--preset", "tiny-1m", "--tokenizer-from", ctx.teacher],
        rf"output directory {q(out)} already exists and is not empty\. pass --overwrite to replace it",
        keep=(out,),
    )


# Writing over one of its own inputs: the same line from every command, even with --overwrite.
OWN_INPUT = r"output {out} is also an input of this command \({name} {given}\)\. writing it would destroy that input: choose another output directory"


@case("output-is-input", "train")
def train_out_is_its_start_model(ctx):
    model = ctx.copy(ctx.student, "m")
    return Call(
        train(ctx, ctx.data["scored"], "--overwrite", model=model, out="m"),
        OWN_INPUT.format(out=q(model), name="model", given=q(model)),
        keep=(model,),
    )


@case("output-is-input", "score-teacher")
def score_out_is_its_input(ctx):
    rollouts = ctx.copy(ctx.data["rollouts"], "rollouts")
    return Call(
        score(ctx, rollouts, "--overwrite", out="rollouts"),
        OWN_INPUT.format(out=q(rollouts), name="input", given=q(rollouts)),
        keep=(rollouts,),
    )


@case("output-is-input", "rollout")
def rollout_out_holds_its_model(ctx):
    model = ctx.copy(ctx.student, "work/m")
    return Call(
        rollout(ctx, "--overwrite", model=model, out="work"),
        OWN_INPUT.format(out=q(ctx.tmp / "work"), name="model", given=q(model)),
        keep=(model,),
    )


@case("output-is-input", "eval")
def eval_out_is_a_model_it_samples(ctx):
    model = ctx.copy(ctx.student, "m")
    return Call(
        evaluate(ctx, "--model", model, "--overwrite", out="m"),
        OWN_INPUT.format(out=q(model), name="model", given=q(model)),
        keep=(model,),
    )


@case("output-is-input", "run")
def run_dir_is_the_student(ctx):
    student = ctx.copy(ctx.student, "run")  # run_recipe's run.dir
    recipe = run_recipe(ctx)
    return Call(
        ["run", recipe, "--overwrite", *sets(f"run.student={student}")],
        OWN_INPUT.format(out=q(student), name="student", given=q(student)),
        keep=(student,),
    )


# --------------------------------------------------------------------------------------------
# the check every case passes


@pytest.fixture(scope="module")
def data(models, tmp_path_factory) -> dict[str, Path]:
    """One small rollouts artifact (4 prompts x G = 2, two parts), its scored copy, an artifact with
    no rows, and a checkpoint-shaped directory. Cases copy them before damaging anything."""
    from rladctl.config import load_recipe
    from rladctl.stages.rollout import run_rollout
    from rladctl.stages.score_teacher import run_score_teacher

    root = tmp_path_factory.mktemp("bad-input")
    paths = {name: root / name for name in ("rollouts", "scored", "empty", "checkpoint")}
    run_rollout(
        load_recipe(
            None,
            TASK_SETS
            + [
                f'rollout.model="{models["student"]}"',
                f'rollout.out="{paths["rollouts"]}"',
                "rollout.num_prompts=4",
                "rollout.group_size=2",
                "rollout.max_new_tokens=6",
                "rollout.prompts_per_part=2",
            ],
        )
    )
    run_score_teacher(
        load_recipe(
            None,
            [
                f'score_teacher.teacher="{models["teacher"]}"',
                f'score_teacher.input="{paths["rollouts"]}"',
                f'score_teacher.out="{paths["scored"]}"',
            ],
        )
    )
    manifest = json.loads((paths["rollouts"] / MANIFEST).read_text())
    paths["empty"].mkdir()
    (paths["empty"] / MANIFEST).write_text(json.dumps(manifest | {"rows": 0, "parts": []}))
    shutil.copytree(models["student"], paths["checkpoint"])
    (paths["checkpoint"] / MANIFEST).write_text(json.dumps({"kind": S.CHECKPOINT, "fingerprint": "another run"}))
    return paths


@pytest.fixture
def ctx(models, data, tmp_path) -> Ctx:
    return Ctx(tmp_path, models, data, shared=[*models.values(), *data.values()])


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file's bytes under ``path``."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_refused(done: subprocess.CompletedProcess, pattern: str) -> str:
    """Exit code 2, exactly one stderr line ``error: ...`` that ``pattern`` matches from its start
    (after "error: "), no traceback."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    assert re.match(f"error: {pattern}", lines[0]), f"\n{lines[0]}\ndoes not match\nerror: {pattern}"
    return lines[0]


def assert_nothing_complete(out: Path) -> None:
    """No manifest (artifact, checkpoint or snapshot) and no weights anywhere in or beside ``out``."""
    for place in (out, Path(f"{out}.partial")):
        if place.exists():
            found = [p for p in place.rglob("*") if p.name == MANIFEST or p.suffix == ".safetensors"]
            assert not found, f"{found} left behind by a refused command"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_damages_nothing(case: Case, ctx: Ctx):
    call = case.build(ctx)
    assert call.args[0] == case.command
    keep = [*call.keep, *ctx.shared]
    before = {path: snapshot(path) for path in keep}
    assert all(before.values()), "a case keeps an input that does not exist"
    assert_refused(run_cli(*map(str, call.args)), call.pattern)
    for path in keep:
        assert snapshot(path) == before[path], f"{path} was changed by a refused command"
    if call.out is not None:
        assert_nothing_complete(call.out)


def test_the_catalogue_covers_every_category_and_command():
    assert len(CASES) >= 30, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    assert REQUIRED_CATEGORIES <= {c.category for c in CASES}, REQUIRED_CATEGORIES - {c.category for c in CASES}
    assert {c.command for c in CASES} == COMMANDS
    # Two kinds that must each be seen from both commands that meet them.
    assert {c.command for c in CASES if c.category == "tokenizer-mismatch"} >= {"score-teacher", "train"}
    assert {"nan", "inf"} <= {word for c in CASES if c.category == "non-finite-logprobs" for word in c.id.split("_")}
