"""A train run on disk: snapshots for resume, whole saves from any number of ranks, divergence errors.

``<out>.partial/step-NNNNNN`` holds a snapshot every ``train.save_every`` optimizer steps (weights,
AdamW state, RNG, metrics), written whole by rank 0 so a run resumes on any number of ranks; the
final checkpoint replaces them. A run that must stop names the newest snapshot it can trust.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from rladctl import distributed
from rladctl.errors import ArtifactError, RladError
from rladctl.progress import log
from rladctl.store.artifacts import MANIFEST, OLD_MANIFEST
from rladctl.store.checkpoint import (
    load_training_state,
    read_manifest,
    read_metrics,
    save_checkpoint,
)
from rladctl.store.files import TMP_MARK


class TrainingDiverged(RladError, ArithmeticError):
    """The loss stayed non-finite; the last good checkpoint is named in the message."""


def prepare_output(out: Path, partial: Path, fp: str, resume: bool) -> Path | None:
    """The snapshot to resume from (None: start afresh), after clearing what a killed run left.

    Every rank looks before rank 0 alone deletes anything.
    """
    snap = latest_snapshot(partial, fp) if resume else None

    def clear() -> None:
        if not resume or (partial.exists() and snap is None):
            discard(partial)
        remove_leftovers(out, partial)

    distributed.barrier()
    distributed.main_only(clear)
    return snap


def snapshots(partial: Path) -> list[Path]:
    """Finished snapshot directories, oldest first (a killed save leaves ``*.tmp-*`` siblings)."""
    if not partial.is_dir():
        return []
    return sorted(p for p in partial.glob("step-*") if TMP_MARK not in p.name and p.is_dir())


def latest_snapshot(partial: Path, fp: str, before: int | None = None) -> Path | None:
    """The newest complete snapshot of this run (fingerprint ``fp``), optionally of a step < ``before``."""
    for snap in reversed(snapshots(partial)):
        manifest = read_manifest(snap)
        if manifest and manifest.get("fingerprint") == fp and (before is None or manifest["snapshot_step"] < before):
            return snap
    return None


def prune_snapshots(partial: Path, keep: int) -> None:
    """Each snapshot is a full model plus optimizer state: keep only the newest ``keep``."""
    for snap in snapshots(partial)[:-keep]:
        discard(snap)


def discard(tree: Path) -> None:
    """Remove snapshots in the reverse order of a save: every manifest under ``tree`` first (its
    presence means complete), then the files, so a kill midway never leaves a manifest without its
    weights; what it does leave has no manifest, and the next run clears it."""
    if tree.is_dir():
        for name in (MANIFEST, OLD_MANIFEST):
            for manifest in tree.rglob(name):
                manifest.unlink(missing_ok=True)
    shutil.rmtree(tree, ignore_errors=True)


def remove_leftovers(out: Path, partial: Path) -> None:
    """Temporary directories of saves that a killed run never finished."""
    for tmp in [*out.parent.glob(f"{out.name}{TMP_MARK}*"), *partial.glob(f"*{TMP_MARK}*")]:
        shutil.rmtree(tmp, ignore_errors=True)


def save_whole(
    path: Path, model, tokenizer, optimizer, step: int, metrics: list[dict], manifest: dict, after=None
) -> None:
    """``save_checkpoint`` of the whole model and optimizer (None: without it) by rank 0 (then ``after()``), on every rank.

    DDP ranks hold identical copies; FSDP2's shards are first gathered on rank 0.
    """
    hf_model, weights, optim = model_of(model), None, optimizer
    if distributed.is_fsdp(model):
        state, optim_state = distributed.full_state(model, optimizer, prefix="model.")
        weights, optim = _Gathered(hf_model, state), _GatheredOptimizer(optim_state) if optimizer is not None else None

    def write() -> None:
        save_checkpoint(path, weights or hf_model, tokenizer, optim, step, metrics, manifest)
        if after is not None:
            after()

    distributed.main_only(write)


def model_of(model):
    """The Hugging Face model inside a LogprobPolicy (inside DDP)."""
    return getattr(model, "module", model).model


class _Gathered:
    """What ``save_checkpoint`` needs of a model, when its weights were gathered from FSDP2 shards."""

    def __init__(self, model, state_dict: dict):
        # A tied head is one parameter under two names; save it once, as save_pretrained would.
        aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {
            n for n, _ in model.named_parameters()
        }
        self.model, self.state_dict = model, {k: v for k, v in state_dict.items() if k not in aliases}

    def save_pretrained(self, path, **kwargs) -> None:
        self.model.save_pretrained(path, state_dict=self.state_dict, **kwargs)


class _GatheredOptimizer:
    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def restore_snapshot(snap: Path, model, optimizer) -> tuple[int, list[dict]]:
    """Weights, optimizer state and RNG of a snapshot, saved whole: any number of ranks resumes it."""
    from safetensors.torch import load_file

    state_dict = {}
    for file in sorted(snap.glob("*.safetensors")):
        state_dict.update(load_file(file))
    hf_model = model_of(model)
    expected = set(hf_model.state_dict())
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if unexpected or [m for m in missing if "lm_head" not in m]:  # tied heads are not saved twice
        raise ArtifactError(f"snapshot {snap} does not match the model", None, "delete it or re-run with --no-resume")
    if distributed.is_fsdp(model):
        distributed.load_model_state(model, state_dict, prefix="model.")
    else:
        hf_model.load_state_dict(state_dict, strict=False)
    state = load_training_state(snap)
    distributed.load_optimizer_state(model, optimizer, state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(read_manifest(snap)["snapshot_step"]), read_metrics(snap)


def match_saved_weights(out: Path, hf_model) -> None:
    """After a replay: the weights must be the checkpoint's own, which later stages were built from.

    On a CPU they are, bit for bit. Kernels that are not deterministic (some CUDA ones) can differ
    in the last bits: then the saved weights are loaded, and only the AdamW state is the replay's.
    """
    from safetensors.torch import load_file

    saved = {}
    for file in sorted(out.glob("*.safetensors")):
        saved.update(load_file(file))
    state = hf_model.state_dict()
    differ = [k for k, v in saved.items() if not torch.equal(state[k].cpu(), v)]
    if differ:
        log(
            f"[yellow]replaying {out} gave weights that differ from the saved ones in {len(differ)} tensors (non-deterministic kernels); continuing from the saved weights"
        )
        hf_model.load_state_dict(saved, strict=False)


def apply_update(optimizer, step: int, lr: float, out: Path, partial: Path, fp: str, start_model: str) -> None:
    try:
        optimizer.step()
    except RuntimeError as exc:  # e.g. AdamW's step size lr / (1 - beta1^t) overflows float32
        if "overflow" not in str(exc):
            raise
        last = latest_snapshot(partial, fp)
        raise TrainingDiverged(
            f"the optimizer update overflowed at step {step + 1} (lr {lr:g})",
            f"training {out}",
            f"the last good checkpoint is {last or start_model}; lower train.lr",
        ) from None


def diverged(what: str, first_bad: int, out: Path, partial: Path, fp: str, start_model: str) -> TrainingDiverged:
    """The error for a run that must stop, naming the newest snapshot from before the trouble.

    Snapshot ``step-j`` holds the weights that step j (0-based, this call) trained on. When step
    ``first_bad`` gave the first of the non-finite losses, its weights are suspect, so the last good
    snapshot is the newest of a step below it.
    """
    last = latest_snapshot(partial, fp, before=first_bad)
    return TrainingDiverged(
        what,
        f"training {out}",
        f"the last good checkpoint is {last or start_model}; lower train.lr or check the inputs",
    )
