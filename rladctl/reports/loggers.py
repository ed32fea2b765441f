"""Metrics to TensorBoard and Weights & Biases, beside the metrics.jsonl that stays the record.

The ``[log]`` recipe table (``LogConfig``) turns them on. ``open_loggers`` returns one ``Loggers``
that fans ``log(scalars, step)`` out to each writer asked for, and nothing on a rank other than 0.
Both packages are optional extras, imported only when asked for; ``check_packages`` refuses a
missing one with one line before any model loads.

    <root>/tensorboard/[<subdir>/]events.out.tfevents.*   TensorBoard (torch's SummaryWriter)
    <root>/wandb/offline-run-*/run-*.wandb                W&B (``wandb sync`` uploads an offline run)

Names are ``train/<metrics.jsonl key>`` against the optimizer step and ``eval/mean@K``,
``eval/accuracy``, ``eval/pass@k`` against the optimizer step the evaluated weights had.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Protocol

from rladctl import distributed
from rladctl.errors import MissingDependencyError, RladError, first_line

# recipe key -> the importable package it needs (each one an extra of the same name in pyproject.toml)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class Logger(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def wanted(cfg) -> list[str]:
    """The writers ``cfg`` (a LogConfig) asks for; wandb_mode = "disabled" asks for none."""
    return [k for k in PACKAGES if getattr(cfg, k) and not (k == "wandb" and cfg.wandb_mode == "disabled")]


def check_packages(cfg) -> None:
    """One line naming the extra to install, for the first writer whose package is missing."""
    for key in wanted(cfg):
        if importlib.util.find_spec(PACKAGES[key]) is None:
            raise _missing(key)


def _missing(key: str) -> MissingDependencyError:
    package = PACKAGES[key]
    return MissingDependencyError(
        f"log.{key} needs the {package} package", fix=f"pip install 'rladctl[{package}]', or set log.{key}=false"
    )


class TensorBoardLogger:
    def __init__(self, directory: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(directory))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # a killed run keeps every point it logged

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, cfg, directory: Path, name: str, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=cfg.wandb_project,
                name=cfg.run_name or name,
                mode=cfg.wandb_mode,
                dir=str(directory),
                config=config,
                # stderr stays rladctl's (progress bars); metrics.jsonl and the reports hold the rest
                settings=wandb.Settings(console="off", silent=bool(os.environ.get("RLADCTL_QUIET"))),
            )
        except wandb.errors.Error as exc:  # online without a login or a network, a bad project name
            raise RladError(
                f"W&B could not start a run ({first_line(exc)})",
                f"with log.wandb_mode={cfg.wandb_mode}",
                'run `wandb login`, or set log.wandb_mode="offline" and `wandb sync` later',
            ) from None

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Every writer the recipe asked for; with none, ``log`` does nothing."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def log(self, scalars: dict[str, float], step: int) -> None:
        if scalars:
            for logger in self.loggers:
                logger.log(scalars, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_loggers(cfg, root: Path, name: str, config: dict[str, Any] | None = None, subdir: str = "") -> Loggers:
    """The writers ``cfg`` asks for, writing under ``root`` (rank 0 only; the others get none).

    ``name`` names the W&B run unless ``log.run_name`` does; ``subdir`` separates the TensorBoard
    runs of several outputs under one root (`rladctl train`: the checkpoint's name).
    """
    if not distributed.is_main():
        return Loggers([])
    check_packages(cfg)
    loggers: list[Logger] = []
    try:
        for key in wanted(cfg):
            if key == "tensorboard":
                loggers.append(TensorBoardLogger(Path(root) / "tensorboard" / subdir))
            else:
                loggers.append(WandbLogger(cfg, Path(root), name, config or {}))
    except BaseException:
        Loggers(loggers).close()
        raise
    return Loggers(loggers)


def train_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """One optimizer step's metrics.jsonl line as ``train/<key>`` scalars (its step is the x-axis)."""
    return {
        f"train/{key}": float(value)
        for key, value in metrics.items()
        if key != "step" and isinstance(value, (int, float))  # bools (skipped) become 0 / 1
    }


def eval_scalars(summary, K: int) -> dict[str, float]:
    """One model's evaluation (a metrics.Summary), overall: Mean@K, accuracy and Pass@k for each k."""
    overall = summary.overall
    scalars = {f"eval/mean@{K}": overall.mean, "eval/accuracy": overall.accuracy}
    scalars |= {f"eval/pass@{k}": value for k, value in overall.pass_at.items()}
    return {key: float(value) for key, value in scalars.items()}
