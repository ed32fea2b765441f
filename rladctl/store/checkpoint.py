"""Checkpoint directories: a Hugging Face model plus what it takes to resume training.

    <dir>/config.json, model.safetensors, tokenizer files    loads with from_pretrained
    <dir>/training_state/state.pt                             optimizer, global step, RNG (tensors only)
    <dir>/metrics.jsonl                                       one line per optimizer step
    <dir>/_manifest.json                                      written last: its presence = complete
                                                              (manifest.json before 0.2: still read)

A checkpoint is built in a temporary sibling and renamed into place, so a crash never leaves a half
checkpoint where a complete one is expected.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from rladctl.store.artifacts import MANIFEST, manifest_path, read_manifest_file
from rladctl.store.files import TMP_MARK, atomic_write_json, writing

STATE_FILE = Path("training_state") / "state.pt"
METRICS_FILE = "metrics.jsonl"


def save_checkpoint(
    path: Path, model, tokenizer, optimizer, step: int, metrics: list[dict], manifest: dict[str, Any]
) -> None:
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(path):
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / STATE_FILE).parent.mkdir(parents=True, exist_ok=True)
            state = {"step": torch.tensor(step), "rng": torch.get_rng_state()}
            if optimizer is not None:
                state["optimizer"] = optimizer.state_dict()
            torch.save(state, tmp / STATE_FILE)
            (tmp / METRICS_FILE).write_text("".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))
            atomic_write_json(tmp / MANIFEST, manifest)
            replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place; an older one at ``final`` is removed only after."""
    old = final.with_name(f"{final.name}{TMP_MARK}old-{os.getpid()}")
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return manifest_path(path).exists()


def read_manifest(path: Path) -> dict[str, Any] | None:
    file = manifest_path(path)
    return read_manifest_file(file, need_parts=False) if file.exists() else None


def load_training_state(path: Path) -> dict[str, Any] | None:
    file = Path(path) / STATE_FILE
    if not file.exists():
        return None
    return torch.load(file, map_location="cpu", weights_only=True)


def read_metrics(path: Path) -> list[dict]:
    file = Path(path) / METRICS_FILE
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
