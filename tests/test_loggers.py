"""[log]: TensorBoard and W&B hold what metrics.jsonl and the eval reports hold, at the right steps;
a missing package is one line; the overall line of `rladctl run`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TASK_SETS, run_cli, sets

from rladctl.config import load_recipe

REPO = Path(__file__).resolve().parents[1]


def metrics_of(checkpoint: Path) -> list[dict]:
    return [json.loads(line) for line in (checkpoint / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``directory``'s event files, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(value) -> float:
    """What an event file holds of a float: TensorBoard stores scalars as float32."""
    return float(np.float32(value))


def train(shards, out: Path, *extra: str):
    from rladctl.stages.train import run_train

    recipe = load_recipe(
        None,
        [
            f'train.model="{shards["student"]}"',
            f'train.inputs=["{shards["scored"]}"]',
            f'train.out="{out}"',
            "train.mini_batches=2",
            "train.lr=1e-3",
            *extra,
        ],
    )
    return run_train(recipe)


def test_train_writes_every_step_of_metrics_jsonl_to_tensorboard(shards, tmp_path):
    pytest.importorskip("tensorboard")
    train(shards, tmp_path / "ckpt", "log.tensorboard=true")
    metrics = metrics_of(tmp_path / "ckpt")
    assert [m["step"] for m in metrics] == [1, 2]
    assert not (tmp_path / "ckpt" / "tensorboard").exists(), "the checkpoint holds only the model"
    scalars = tensorboard_scalars(tmp_path / "tensorboard" / "ckpt")
    numeric = [k for k in metrics[0] if k != "step" and isinstance(metrics[0][k], (int, float))]
    assert {"loss", "grad_norm", "reward_mean", "lr", "skipped", "clip_frac_high"} <= set(numeric)
    assert sorted(scalars) == sorted(f"train/{k}" for k in numeric)
    for key in numeric:
        assert scalars[f"train/{key}"] == [(m["step"], f32(m[key])) for m in metrics], key


def run_args(models, run_dir: Path, *extra: str) -> list[str]:
    """Two iterations of two optimizer steps each, evaluated before and after each one."""
    return [
        "run",
        str(REPO / "recipes" / "demo.toml"),
        *sets(
            *TASK_SETS,
            f"run.dir={run_dir}",
            f"run.student={models['student']}",
            f"run.teacher={models['teacher']}",
            "run.iterations=2",
            "run.eval_every=1",
            "rollout.num_prompts=2",
            "rollout.group_size=4",
            "rollout.max_new_tokens=6",
            "eval.pass_at=2",
            "eval.num_prompts=2",
            "eval.max_new_tokens=6",
            "eval.bootstrap=0",
            "train.lr=1e-3",
            "train.mini_batches=2",
            *extra,
        ),
    ]


def test_run_logs_train_steps_across_iterations_and_every_evaluation(models, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from rladctl.tasks.catalog import GymTask

    # An untrained student never answers right; score the completion's length parity instead (as the
    # shards fixture does), so rewards, losses and eval means are not all 0.
    monkeypatch.setattr("rladctl.tasks.catalog.extract_answer", lambda completion, prompt: completion or "-")
    monkeypatch.setattr(GymTask, "score", lambda self, metadata, extracted: float(len(extracted) % 2))
    # continue_optimizer=false: train's own step count starts again at 1 each iteration; the run's does not
    done = run_cli(*run_args(models, tmp_path / "run", "log.tensorboard=true", "train.continue_optimizer=false"))
    assert done.returncode == 0, done.stderr
    steps = metrics_of(tmp_path / "run" / "iter-0000" / "checkpoint") + metrics_of(
        tmp_path / "run" / "iter-0001" / "checkpoint"
    )
    assert [m["step"] for m in steps] == [1, 2, 1, 2]
    assert all(m["loss"] != 0 and 0 < m["reward_mean"] < 1 for m in steps)
    scalars = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    for key in ("loss", "grad_norm", "reward_mean", "approx_kl_old"):
        assert scalars[f"train/{key}"] == [(n + 1, f32(m[key])) for n, m in enumerate(steps)], key
    # evaluations before training, after iteration 1 (2 steps) and after iteration 2 (4 steps)
    assert 0 < eval_overall(tmp_path / "run", 2)["mean"] < 1
    for tag, field in (("eval/mean@2", "mean"), ("eval/accuracy", "accuracy")):
        expected = [(2 * k, f32(eval_overall(tmp_path / "run", k)[field])) for k in (0, 1, 2)]
        assert scalars[tag] == expected, tag
    for k_ in (1, 2):
        expected = [(2 * k, f32(eval_overall(tmp_path / "run", k)["pass_at"][str(k_)])) for k in (0, 1, 2)]
        assert scalars[f"eval/pass@{k_}"] == expected


def eval_overall(run_dir: Path, k: int) -> dict:
    """The overall metrics of the evaluation after k iterations, from its report.json."""
    report = json.loads((run_dir / "eval" / f"step-{k:04d}" / "report.json").read_text())
    (summary,) = report["summaries"].values()
    return summary["overall"]


def wandb_history(root: Path) -> list[dict]:
    """The history records of the one offline run under ``root``, read by wandb's own reader
    (``wandb leet inspect --json``, which prints each record of a run's .wandb file)."""
    (run_file,) = (root / "wandb").glob("offline-run-*/run-*.wandb")
    shown = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    records = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_train_writes_the_same_history_to_an_offline_wandb_run(shards, tmp_path, monkeypatch):
    pytest.importorskip("wandb", minversion="0.31")  # the history is read back with its `wandb leet inspect`
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # log.* decides: the run lands beside the checkpoint
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    train(shards, tmp_path / "ckpt", "log.wandb=true", 'log.wandb_mode="offline"', 'log.run_name="tiny"')
    metrics = metrics_of(tmp_path / "ckpt")
    history = wandb_history(tmp_path)
    assert [h["_step"] for h in history] == [m["step"] for m in metrics] == [1, 2]
    for item, m in zip(history, metrics):
        for key in ("loss", "grad_norm", "reward_mean", "lr", "tokens"):
            assert item[f"train/{key}"] == pytest.approx(m[key], rel=1e-12, abs=0), key
        assert item["train/skipped"] == 0
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("key", ["tensorboard", "wandb"])
def test_a_missing_package_is_one_line_before_any_work(key, shards, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, key, None)  # `import key` now fails, as if not installed
    out = tmp_path / "ckpt"
    done = run_cli(
        "train",
        "--model",
        str(shards["student"]),
        "--input",
        str(shards["scored"]),
        "--out",
        str(out),
        *sets(f"log.{key}=true"),
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: log.{key} needs the {key} package. pip install 'rladctl[{key}]', or set log.{key}=false.\n"
    )
    assert not out.exists() and not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()
    # `rladctl run --dry-run` checks it too, and wandb_mode = "disabled" needs no package at all
    dry = run_cli(*run_args(shards, tmp_path / "run"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    refused = run_cli(*run_args(shards, tmp_path / "run", f"log.{key}=true"), "--dry-run")
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: log.{key} needs the {key} package.")
    if key == "wandb":
        off = run_cli(*run_args(shards, tmp_path / "run", "log.wandb=true", 'log.wandb_mode="disabled"'), "--dry-run")
        assert off.returncode == 0, off.stderr


def test_a_wandb_run_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from rladctl.errors import RladError
    from rladctl.reports.loggers import open_loggers

    def refuse(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])\nmore")

    monkeypatch.setattr(wandb, "init", refuse)
    cfg = load_recipe(None, ["log.wandb=true", 'log.wandb_mode="online"']).log
    with pytest.raises(RladError) as exc:
        open_loggers(cfg, tmp_path, "run")
    assert str(exc.value) == (
        "W&B could not start a run (api_key not configured (no-tty). call wandb.login(key=[your_api_key])),"
        ' with log.wandb_mode=online. run `wandb login`, or set log.wandb_mode="offline" and `wandb sync` later.'
    )


def test_a_bad_wandb_mode_names_the_key_and_the_choices():
    from rladctl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"recipe key 'log.wandb_mode' is 'ofline'.*did you mean 'offline'\?"):
        load_recipe(None, ['log.wandb_mode="ofline"'])


# --------------------------------------------------------------------------------------------
# the overall line of `rladctl run`


def test_run_line_shows_progress_clocks_reward_and_mean():
    from rladctl.progress import clock, run_line

    assert clock(0) == "0:00:00" and clock(3725.9) == "1:02:05" and clock(-3) == "0:00:00"
    assert run_line(3, 10, 125.0, 3725.0, 0.41234, 0.3, 8) == (
        "run: iteration 3/10 · elapsed 0:02:05 · ETA 1:02:05 · reward 0.412 · Mean@8 0.300"
    )
    assert run_line(1, 10, 5.0, None, None, None, 32) == (
        "run: iteration 1/10 · elapsed 0:00:05 · ETA - · reward - · Mean@32 -"
    )


def test_run_status_spreads_the_remaining_iterations_at_the_pace_so_far():
    from rladctl.progress import RunStatus

    now = [100.0]
    status = RunStatus(total=5, K=4, clock_fn=lambda: now[0])
    status.start(1)  # a resumed run: iteration 0 was done before
    now[0] = 130.0
    assert status.line() == "run: iteration 2/5 · elapsed 0:00:30 · ETA - · reward - · Mean@4 -"
    status.finish(1, reward=0.5)  # 30 s for one iteration, 3 to go: 90 s
    status.mean_at_k = 0.25
    assert status.line() == "run: iteration 2/5 · elapsed 0:00:30 · ETA 0:01:30 · reward 0.500 · Mean@4 0.250"
    status.start(2)
    now[0] = 150.0  # 20 s into iteration 3: 70 s left
    assert status.line() == "run: iteration 3/5 · elapsed 0:00:50 · ETA 0:01:10 · reward 0.500 · Mean@4 0.250"
    now[0] = 300.0  # slower than the pace so far: never below 0
    assert "ETA 0:00:00" in status.line()


def test_status_line_sits_above_a_stage_bar_on_a_terminal_and_is_silent_elsewhere(monkeypatch):
    from rich.console import Console

    from rladctl import progress

    monkeypatch.delenv("RLADCTL_QUIET", raising=False)
    for terminal in (True, False):
        buffer = io.StringIO()
        monkeypatch.setattr(
            progress,
            "err_console",
            Console(file=buffer, force_terminal=terminal, width=200, highlight=False, color_system=None),
        )
        status = progress.RunStatus(total=2, K=2)
        with progress.status_line(status):
            status.start(0)
            with progress.meter("rollout iter-0000", total=3) as bar:
                bar.advance(3, tokens=30)
        text = buffer.getvalue()
        assert ("run: iteration 1/2" in text) is terminal, text
        assert "rollout iter-0000" in text  # the stage bar's last state stays either way
        if terminal:
            assert text.index("run: iteration 1/2") < text.index("rollout iter-0000")
    for env in ({"RLADCTL_QUIET": "1"}, {"WORLD_SIZE": "2", "RANK": "1"}):  # quiet, or a rank other than 0
        with monkeypatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            buffer = io.StringIO()
            mp.setattr(progress, "err_console", Console(file=buffer, force_terminal=True))
            with progress.status_line(progress.RunStatus(total=2, K=2)):
                pass
            assert buffer.getvalue() == "", env


def test_rladctl_help_does_not_import_the_loggers_packages():
    code = "import sys; from rladctl import cli; print(sorted(m for m in ('tensorboard', 'wandb', 'torch') if m in sys.modules))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert shown.stdout.strip() == "[]"
