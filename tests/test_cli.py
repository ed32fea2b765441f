"""The command line as a user meets it: fast help, documented commands, one-line errors (DESIGN §7)."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TASK_SETS, run_cli, sets

from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, ArtifactWriter

HEAVY = ("torch", "transformers", "pyarrow", "reasoning_gym", "numpy")
WIDE = {"COLUMNS": "250"}  # one help line per command, however long the summary


def commands() -> dict:
    """Every command registered on the Typer app, as click commands (new commands join by themselves)."""
    import typer.main

    from rladctl.cli import app

    return dict(typer.main.get_command(app).commands)


def summary(command) -> str:
    return inspect.cleandoc(command.help or "").split("\n\n")[0]


def example(command) -> str:
    return inspect.cleandoc(command.help or "").splitlines()[-1]


def squash(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, nothing on stdout, exactly one stderr line 'error: ...', no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == "", (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def rollout_args(models, out: Path, *extra: str) -> list[str]:
    return [
        "rollout",
        "--model",
        str(models["student"]),
        "--out",
        str(out),
        "-n",
        "2",
        "-G",
        "2",
        *sets(*TASK_SETS, "rollout.max_new_tokens=4"),
        *extra,
    ]


# --------------------------------------------------------------------------------------------
# help


def test_help_lists_every_command_with_its_summary():
    # A new interpreter, as a user runs it. That --help is instant is checked by what it imports
    # (next test), not by a clock: a timed test fails on a loaded machine.
    env = dict(os.environ, **WIDE)
    done = subprocess.run(
        [sys.executable, "-m", "rladctl", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [squash(line) for line in done.stdout.splitlines()]
    for name, command in commands().items():
        text = summary(command)
        assert text and "\n" not in text, f"{name}: the docstring must open with a one-line summary"
        assert f"{name} {squash(text)}" in lines, f"{name} is not listed with its summary in:\n{done.stdout}"


def test_importing_the_cli_and_rendering_help_loads_no_ml_library():
    # A new interpreter: this process imported torch long ago.
    script = (
        "import json, sys\n"
        "import rladctl.cli as cli\n"
        f"heavy = {HEAVY!r}\n"
        "on_import = [m for m in heavy if m in sys.modules]\n"
        "for argv in [['--help']] + [[name, '--help'] for name in cli.typer.main.get_command(cli.app).commands]:\n"
        "    sys.argv = ['rladctl', *argv]\n"
        "    try:\n"
        "        cli.main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "sys.stderr.write(json.dumps([on_import, [m for m in heavy if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    on_import, after_help = json.loads(done.stderr.splitlines()[-1])
    assert on_import == [] and after_help == []


@pytest.mark.parametrize("name", list(commands()))
def test_every_command_help_ends_with_a_runnable_looking_example(name):
    from typer.testing import CliRunner

    from rladctl.cli import app

    command = commands()[name]
    line = example(command)
    assert line.startswith(f"Example: rladctl {name} "), (
        f"{name}: the docstring must end with 'Example: rladctl {name} ...'"
    )
    # Every option the example uses exists on the command (examples rot when options are renamed).
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = [token.split("=")[0] for token in shlex.split(line)[3:] if token.startswith("-")]
    assert set(used) <= known, f"{name}: example uses unknown options {sorted(set(used) - known)}"
    shown = CliRunner().invoke(app, [name, "--help"], env=WIDE)
    assert shown.exit_code == 0, shown.output
    assert line in [squash(x) for x in shown.output.splitlines()]


# --------------------------------------------------------------------------------------------
# user mistakes: one line, exit code 2 (no model needed)


RECIPES = {
    "bad_key.toml": "[rollout]\ntemprature = 0.5\n",
    "bad_table.toml": "[rollot]\nseed = 1\n",
    "bad_type.toml": '[rollout]\nnum_prompts = "abc"\n',
    "bad_syntax.toml": "[rollout\nseed = 1\n",
}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["-r", "bad_key.toml"],
            ["unknown recipe key 'rollout.temprature'", "bad_key.toml", "did you mean 'temperature'?"],
        ),
        (
            ["--set", "rollout.temprature=0.5"],
            ["unknown recipe key 'rollout.temprature'", "--set", "did you mean 'temperature'?"],
        ),
        (["-r", "bad_table.toml"], ["unknown recipe table [rollot]", "did you mean 'rollout'?"]),
        (["-r", "bad_type.toml"], ["'rollout.num_prompts' must be int, got str 'abc'"]),
        (
            ["--set", "rollout.num_prompts=abc"],
            ["'rollout.num_prompts' must be int, got str 'abc'", "--set rollout.num_prompts=abc"],
        ),
        (["-r", "bad_syntax.toml"], ["bad_syntax.toml is not valid TOML", "fix the TOML syntax"]),
        (["-r", "missing.toml"], ["recipe missing.toml does not exist"]),
        (["--set", "rollout.seed"], ["override 'rollout.seed' has no '='", "table.key=value"]),
    ],
    ids=["key", "key-set", "table", "type", "type-set", "toml", "no-recipe", "set-syntax"],
)
def test_recipe_mistakes_are_one_line(tmp_path, monkeypatch, args, fragments):
    for name, text in RECIPES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert_user_error(run_cli("rollout", *args), *fragments)


def test_incomplete_input_artifact_is_refused(tmp_path, models):
    from test_artifacts import rollout_table

    ArtifactWriter(tmp_path / "r", S.ROLLOUTS, "f" * 32).write_part(0, rollout_table())  # parts, no manifest
    done = run_cli(
        "score-teacher",
        "--teacher",
        str(models["teacher"]),
        "--input",
        str(tmp_path / "r"),
        "--out",
        str(tmp_path / "s"),
    )
    assert_user_error(done, f"{tmp_path / 'r'} is incomplete (no _manifest.json)", "re-run the stage that writes it")
    assert not (tmp_path / "s" / MANIFEST).exists()


# --------------------------------------------------------------------------------------------
# user mistakes that need a model


def test_missing_model_path(tmp_path):
    done = run_cli(*rollout_args({"student": tmp_path / "nope"}, tmp_path / "r"))
    assert_user_error(done, f"model path {tmp_path / 'nope'} does not exist")


def test_unknown_task_suggests_the_close_match(tmp_path, models):
    assert_user_error(
        run_cli(*rollout_args(models, tmp_path / "r"), "--set", "task.name=chain_summ"),
        "unknown task 'chain_summ'",
        "did you mean 'chain_sum'?",
    )


def test_prompt_longer_than_the_context(tmp_path, models):
    done = run_cli(*rollout_args(models, tmp_path / "r"), "--set", "rollout.max_new_tokens=100000")
    assert_user_error(
        done, "with max_new_tokens 100000 it exceeds the context of", str(models["student"]), "lower max_new_tokens"
    )
    assert not (tmp_path / "r" / MANIFEST).exists()


def test_a_different_run_is_refused_then_replaced_with_overwrite(tmp_path, models):
    from rladctl.config import load_recipe
    from rladctl.stages.rollout import run_rollout

    out = tmp_path / "r"
    args = rollout_args(models, out)
    run_rollout(
        load_recipe(
            None,
            TASK_SETS
            + [
                f'rollout.model="{models["student"]}"',
                f'rollout.out="{out}"',
                "rollout.num_prompts=2",
                "rollout.group_size=2",
                "rollout.max_new_tokens=4",
            ],
        )
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert MANIFEST in before
    refused = run_cli(*args, "--seed", "1")
    assert_user_error(refused, f"output directory {out} holds a complete artifact from a different run", "--overwrite")
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}  # the complete run is intact

    replaced = run_cli(*args, "--seed", "1", "--overwrite", "--json")
    assert replaced.returncode == 0, replaced.stderr
    summary = json.loads(replaced.stdout)  # stdout holds the JSON summary and nothing else
    assert summary["out"] == str(out) and summary["rows"] == 4 and summary["skipped"] is False
    assert json.loads((out / MANIFEST).read_text())["sampling"]["seed"] == 1


def test_debug_shows_the_traceback(tmp_path):
    done = run_cli("rollout", "--set", "rollout.temprature=1", env={"RLADCTL_DEBUG": "1"}, cwd=tmp_path)
    assert done.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in done.stderr
    assert "ConfigError: unknown recipe key 'rollout.temprature'" in done.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["evl"], "error: rladctl: No such command 'evl'. Did you mean 'eval'? Run rladctl --help for the options."),
        (["eval", "-k", "x"], "error: rladctl eval: Invalid value for '--pass-at' / '-k': "),
        (["init-model"], "error: rladctl init-model: Invalid value for OUT: give the output directory."),
    ],
)
def test_option_parser_mistakes_are_one_line_too(args, line):
    done = run_cli(*args)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and done.stderr.startswith(line), done.stderr


def test_help_still_exits_zero():
    done = run_cli("eval", "--help")
    assert done.returncode == 0 and "Example: rladctl eval" in done.stdout
