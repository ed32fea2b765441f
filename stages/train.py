"""`rladctl train`: RL / distillation updates over cached (scored) rollout shards.

Reads top to bottom:
  1. load the rows of every input artifact and compute group advantages (per artifact, prompt_id);
  2. with the start model, compute lp_old (and lp_ref) once, before any update;
  3. for each epoch, shuffle (seeded) and split into mini-batches: one optimizer step each,
     micro-batched by a padded-token budget, the loss normalised over the whole step;
  4. snapshot every ``save_every`` steps to ``<out>.partial/`` for resume; write the final checkpoint
     atomically (with the AdamW state unless ``save_optimizer`` is off).
``replay=True`` re-runs a complete checkpoint's training in memory, writing nothing, to rebuild the
AdamW state that `rladctl run` did not save with it (see ``run.optimizer_state_every``).
What the objective needs (teacher log-probs, a row filter, a per-step config) comes from its registry
record, ``rladctl.objectives.get_objective_record``: this file never names an objective.

Under torchrun every rank loads every row and follows the same seeded schedule; each takes its share
of each optimizer step's rows, under DDP (default) or FSDP2 (``train.parallel``). Rank 0 writes the
snapshots and the checkpoint, always whole, so a run resumes on any number of ranks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rladctl import distributed, engines, resident
from rladctl.config import LoadedRecipe, TrainConfig, check_ranges, to_plain
from rladctl.errors import ArtifactError, ConfigError
from rladctl.progress import log, meter
from rladctl.reports.loggers import Loggers, check_packages, open_loggers, train_scalars
from rladctl.store import schema as S
from rladctl.store.artifacts import fingerprint, open_artifact, validate_token_columns
from rladctl.store.checkpoint import (
    is_complete,
    load_training_state,
    read_manifest,
    read_metrics,
)
from rladctl.store.lock import claim_output
from rladctl.store.snapshots import (
    apply_update,
    discard,
    diverged,
    match_saved_weights,
    prepare_output,
    prune_snapshots,
    remove_leftovers,
    restore_snapshot,
    save_whole,
)


@dataclass
class TrainSummary:
    out: str
    steps: int
    rows: int
    tokens: int
    seconds: float
    tokens_per_s: float
    loss_last: float
    reward_mean: float
    skipped_steps: int
    skipped: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Rows:
    """Training rows as plain lists (B rows) plus per-row advantages."""

    prompts: list[list[int]]
    completions: list[list[int]]
    sampler: list[list[float]]
    teacher: list[list[float]] | None
    rewards: np.ndarray  # [B]
    advantages: np.ndarray  # [B]
    dropped_groups: int
    temperature: float  # sampling temperature of the rollouts: the policy's log-probs use it

    def __len__(self) -> int:
        return len(self.prompts)


def load_rows(cfg: TrainConfig, objective) -> tuple[Rows, list[dict]]:
    """The rows to train ``objective`` (its registry record) on, and a reference to each input."""
    from rladctl.objectives.advantages import group_advantages, zero_std_groups

    needs_teacher, row_filter = objective.needs_teacher_logprobs, objective.row_filter
    if not cfg.inputs:
        raise ConfigError(
            "no training inputs given", "for train", "pass --input ARTIFACT (repeatable) or set train.inputs"
        )
    kinds = (S.SCORED,) if needs_teacher else (S.SCORED, S.ROLLOUTS)
    parts: dict[str, list] = {k: [] for k in ("prompts", "completions", "sampler", "teacher", "rewards", "advantages")}
    refs, temps, dropped, group_sizes = [], set(), 0, set()
    for path in cfg.inputs:
        try:
            artifact = open_artifact(path, kinds, role="training")
        except ArtifactError as exc:
            if needs_teacher and "of kind 'rollouts'" in exc.what:
                what = (
                    f"objective '{objective.name}' needs teacher log-probs but {path} is an unscored rollouts artifact"
                )
                fix = "run rladctl score-teacher on it first and train on the scored artifact"
                raise ArtifactError(what, None, fix) from None
            raise
        same = next((ref["path"] for ref in refs if ref["content_id"] == artifact.content_id), None)
        if same is not None:
            raise ConfigError(
                f"training input {path} holds the same rows as {same}",
                "in train.inputs",
                "pass each artifact once: a repeated one would train on its rows twice",
            )
        if artifact.rows == 0:
            raise ArtifactError(
                f"training artifact {path} has no rows",
                None,
                "train on an artifact with rows: re-run rladctl rollout with at least one prompt",
            )
        # The model that sampled the rows: "model" in a rollouts manifest, "student" in a scored one.
        sampled_by = artifact.manifest.get("model") or artifact.manifest.get("student") or {}
        refs.append(artifact.reference() | {"model": sampled_by})
        temps.add(float(artifact.manifest.get("sampling", {}).get("temperature", 1.0)))
        table = artifact.table()
        validate_token_columns(table, (S.SAMPLER_LOGPROBS, S.TEACHER_LOGPROBS), str(path))
        rewards = table[S.REWARD].to_numpy().astype(np.float64)
        groups = table[S.PROMPT_ID].to_pylist()
        group_sizes |= set(Counter(groups).values())
        adv = group_advantages(rewards, groups, eps=cfg.adv_eps)
        keep = np.ones(len(rewards), dtype=bool)
        if row_filter is not None:
            keep = row_filter.keep(rewards, groups, cfg)
        elif cfg.drop_zero_std_groups:
            zero = np.asarray(zero_std_groups(rewards, groups))
            dropped += len({g for g, z in zip(groups, zero) if z})
            keep = ~zero
        idx = np.flatnonzero(keep)
        take = lambda col, idx=idx: [col[i] for i in idx]  # noqa: E731
        parts["prompts"] += take(table[S.PROMPT_TOKEN_IDS].to_pylist())
        parts["completions"] += take(table[S.COMPLETION_TOKEN_IDS].to_pylist())
        parts["sampler"] += take(table[S.SAMPLER_LOGPROBS].to_pylist())
        if S.TEACHER_LOGPROBS in table.column_names:
            parts["teacher"] += take(table[S.TEACHER_LOGPROBS].to_pylist())
        parts["rewards"].append(rewards[idx])
        parts["advantages"].append(np.asarray(adv, dtype=np.float64)[idx])
    if len(temps) > 1:
        raise ConfigError(
            f"training inputs were sampled at different temperatures {sorted(temps)}",
            "in train.inputs",
            "train on artifacts sampled with one temperature",
        )
    has_teacher = len(parts["teacher"]) == len(parts["prompts"])
    rows = Rows(
        parts["prompts"],
        parts["completions"],
        parts["sampler"],
        parts["teacher"] if has_teacher else None,
        np.concatenate(parts["rewards"]),
        np.concatenate(parts["advantages"]),
        dropped,
        temps.pop(),
    )
    if row_filter is None and len(rows) and not rows.advantages.any():
        why = "every group holds one sample (G = 1)" if group_sizes == {1} else "every group's rewards are all equal"
        log(
            f"[yellow]warning: every advantage is 0 ({why}): the reward term of objective "
            f"'{objective.name}' moves no weight in this step; sample more completions per prompt (-G)"
        )
    if len(rows) == 0:
        why = row_filter.nothing_left(cfg) if row_filter is not None else "every group had zero reward variance"
        raise ConfigError(
            f"nothing to train on: {why}", f"in {', '.join(cfg.inputs)}", "sample more prompts or relax the filter"
        )
    return rows, refs


def check_vocab(model, tokenizer, rows: Rows, refs: list[dict]) -> None:
    """Token ids in the rows must exist in, and mean the same to, the student being trained."""
    from rladctl.models.identity import model_identity
    from rladctl.models.tokenizer import check_same_vocab, load_tokenizer

    vocab = model.get_input_embeddings().weight.shape[0]
    top = max(
        max((max(c) for c in rows.completions if c), default=-1), max((max(p) for p in rows.prompts if p), default=-1)
    )
    if top >= vocab:
        raise ArtifactError(
            f"the training rows use token id {top} but the student's vocabulary has {vocab} ids",
            None,
            "train the model that produced the rollouts, or one sharing its tokenizer",
        )
    mine = model_identity(model.name_or_path).get("tokenizer_hash")
    for ref in refs:
        theirs = ref["model"].get("tokenizer_hash")
        path = ref["model"].get("path")
        if theirs and mine and theirs != mine and path and Path(path).exists():
            check_same_vocab(
                load_tokenizer(path),
                tokenizer,
                where=f"between the model that sampled {ref['path']} ({path}) and the student {model.name_or_path}",
                fix="train the model that produced the rollouts, or one sharing its tokenizer",
            )


class LogprobPolicy(torch.nn.Module):
    """A causal LM whose forward returns the log-prob of every completion token (flat [N] float32).

    ``sequence_logprobs`` runs the backbone and reads the LM head's weight itself; as one module's
    forward, DDP and FSDP2 see (and sync, or gather) every parameter it uses.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, temperature: float, chunk_tokens: int) -> torch.Tensor:
        from rladctl.backends.logprobs import sequence_logprobs

        return sequence_logprobs(self.model, batch, temperature, chunk_tokens)


def policy_logprobs(model, batch, temperature: float, chunk_tokens: int) -> torch.Tensor:
    """Through the wrapper (DDP, FSDP2 or a bare LogprobPolicy), or on a plain HF model."""
    from rladctl.backends.logprobs import sequence_logprobs

    if isinstance(model, (LogprobPolicy, torch.nn.parallel.DistributedDataParallel)):
        return model(batch, temperature, chunk_tokens)
    return sequence_logprobs(model, batch, temperature, chunk_tokens)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def micro_batches(lengths: list[int], cfg: TrainConfig, device: torch.device) -> list[list[int]]:
    """Rows (indices into ``lengths``) per forward pass: sorted by length, split with the least padding."""
    from rladctl.backends.logprobs import pass_overhead_tokens, tight_length_buckets

    return tight_length_buckets(lengths, cfg.micro_batch_tokens, pass_overhead_tokens(cfg.micro_batch_tokens, device))


def row_logprobs(
    model, rows: Rows, index: list[int], cfg: TrainConfig, pad_id: int, temperature: float, passes: int = 0
) -> torch.Tensor:
    """Flat log-probs of the completion tokens of ``index`` rows (in that order), no grad.

    Makes at least ``passes`` forward passes (the extra ones on row 0, thrown away): under FSDP2
    each forward is a collective, so every rank must make as many.
    """
    from rladctl.backends.logprobs import build_row_batch

    device = model_device(model)
    buckets = micro_batches([len(rows.prompts[i]) + len(rows.completions[i]) for i in index], cfg, device)
    out: list[torch.Tensor | None] = [None] * len(index)
    with torch.no_grad(), autocast(cfg, device):
        for j in range(max(len(buckets), passes)):
            ids = [index[b] for b in buckets[j]] if j < len(buckets) else [0]
            batch = build_row_batch([rows.prompts[i] for i in ids], [rows.completions[i] for i in ids], pad_id, device)
            flat = policy_logprobs(model, batch, temperature, cfg.chunk_tokens).float().cpu()
            if j < len(buckets):
                for b, values in zip(buckets[j], torch.split(flat, batch.lengths_B)):
                    out[b] = values
    return torch.cat(out) if out else torch.zeros(0)


def start_logprobs(model, rows: Rows, cfg: TrainConfig, pad_id: int) -> torch.Tensor:
    """``row_logprobs`` of every row; under torchrun row i is computed on rank i % world_size, then all-gathered."""
    everything = list(range(len(rows)))
    if not distributed.enabled():
        return row_logprobs(model, rows, everything, cfg, pad_id, rows.temperature)
    mine = distributed.my_share(everything)
    lengths = [len(rows.prompts[i]) + len(rows.completions[i]) for i in mine]
    passes = int(distributed.all_reduce_float(len(micro_batches(lengths, cfg, model_device(model))), "max"))
    flat = row_logprobs(model, rows, mine, cfg, pad_id, rows.temperature, passes)
    per_row: list[torch.Tensor | None] = [None] * len(rows)
    for share, values in distributed.all_gather_objects((mine, flat)):
        for i, v in zip(share, torch.split(values, [len(rows.completions[i]) for i in share])):
            per_row[i] = v
    return torch.cat(per_row) if per_row else torch.zeros(0)


def autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast over float32 weights: asked for, or by default on CUDA."""
    use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


def lr_at(cfg: TrainConfig, step: int, horizon: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant" or horizon <= cfg.warmup_steps:
        return cfg.lr
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
    return cfg.lr * (1 - frac if cfg.lr_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac)))


def schedule(n_rows: int, cfg: TrainConfig) -> list[np.ndarray]:
    """Row indices of every optimizer step: per epoch a seeded shuffle split into mini-batches."""
    if cfg.epochs < 1 or cfg.mini_batches < 1:
        raise ConfigError("train.epochs and train.mini_batches must be >= 1", None, "fix the recipe")
    steps = []
    for epoch in range(cfg.epochs):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n_rows)
        steps += [s for s in np.array_split(perm, min(cfg.mini_batches, n_rows)) if len(s)]
    return steps


def flat_slices(rows: Rows, values_flat: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(values_flat, [len(c) for c in rows.completions]))


def optimizer_step(
    model,
    optimizer,
    objective_fn,
    obj_cfg,
    rows: Rows,
    step_rows: np.ndarray,
    old: list,
    ref: list | None,
    teacher: list | None,
    cfg: TrainConfig,
    pad_id: int,
) -> dict[str, float]:
    """Gradients of one optimizer step over ``step_rows`` (micro-batches, one backward each), clipped.

    ``old``, ``ref`` and ``teacher`` hold one float32 tensor per row; ``old=None`` means the policy
    that sampled is the one being stepped (a single step per call), so lp_old is this pass's own
    detached lp and no separate forward pass is needed. The caller steps the optimizer
    when the returned loss and grad norm are finite. Under torchrun each rank takes the rows
    ``step_rows[rank::world_size]``; the denominators are the whole step's (all-reduced) and each
    rank's loss is scaled by the world size, since DDP and FSDP2 average gradients over ranks: the
    update equals one process's on the same step. Every rank makes as many passes (extra ones on a
    throwaway row, weighted 0), as FSDP2's forward and DDP's last backward are collectives.
    """
    from rladctl.backends.logprobs import build_row_batch, pad_rows
    from rladctl.objectives import Denominators, LossInputs

    index = [int(i) for i in distributed.my_share(list(step_rows))]
    lengths = [len(rows.prompts[i]) + len(rows.completions[i]) for i in index]
    # Whole-step totals; a row without completion tokens is not a sequence (see objectives.aggregate).
    local = [float(sum(len(rows.completions[i]) for i in index)), float(sum(1 for i in index if rows.completions[i]))]
    denominators = Denominators(*distributed.all_reduce_floats(local))
    device = model_device(model)
    buckets = micro_batches(lengths, cfg, device)
    passes = int(distributed.all_reduce_float(len(buckets), "max"))
    filler = next((int(i) for i in step_rows if rows.completions[i]), int(step_rows[0]))
    scale = float(distributed.world_size())
    loss_total, weighted, tokens, gap_sum = 0.0, {}, 0, 0.0
    optimizer.zero_grad(set_to_none=True)
    for j in range(passes):
        ids = [index[b] for b in buckets[j]] if j < len(buckets) else [filler]
        with distributed.grad_sync(model, sync=j == passes - 1):
            batch = build_row_batch([rows.prompts[i] for i in ids], [rows.completions[i] for i in ids], pad_id, device)
            with autocast(cfg, device):
                student = policy_logprobs(model, batch, rows.temperature, cfg.chunk_tokens).float()
            if j >= len(buckets):
                (student.sum() * 0.0).backward()
                continue
            lens = batch.lengths_B
            to_bt = lambda values, lens=lens: pad_rows(torch.cat(values).to(device), lens)[0]  # noqa: E731
            student_BT, mask_BT = pad_rows(student, lens)
            inputs = LossInputs(
                student_logprobs=student_BT,
                old_logprobs=student_BT.detach() if old is None else to_bt([old[i] for i in ids]),
                advantages=torch.tensor(rows.advantages[ids], dtype=torch.float32, device=device),
                mask=mask_BT,
                teacher_logprobs=to_bt([teacher[i] for i in ids]) if teacher is not None else None,
                ref_logprobs=to_bt([ref[i] for i in ids]) if ref is not None else None,
                denominators=denominators,
            )
            out = objective_fn(inputs, obj_cfg)
            (out.loss * scale).backward()
            if old is None:  # sampler-vs-trainer gap, measured on this very pass
                sampled = torch.cat([torch.tensor(rows.sampler[i], dtype=torch.float32) for i in ids])
                gap_sum += float((student.detach().cpu() - sampled).abs().sum())
        loss_total += float(out.loss.detach())
        n = int(mask_BT.sum())
        tokens += n
        for key, value in out.metrics.items():
            weighted[key] = weighted.get(key, 0.0) + value * n
    if old is None:
        weighted["sampler_old_gap"] = gap_sum  # already a token sum, like the weighted metrics
    if distributed.enabled():  # every rank's share: the loss is a sum of contributions, metrics token means
        shares = distributed.all_gather_objects((loss_total, tokens, weighted))
        loss_total, tokens = sum(x[0] for x in shares), sum(x[1] for x in shares)
        weighted = {
            key: sum(x[2].get(key, 0.0) for x in shares) for key in dict.fromkeys(k for x in shares for k in x[2])
        }
    metrics = {key: value / max(tokens, 1) for key, value in weighted.items()}
    metrics["loss"] = loss_total
    metrics["grad_norm"] = distributed.clip_grad_norm(model.parameters(), cfg.grad_clip)
    metrics["tokens"] = tokens
    metrics["reward_mean"] = float(rows.rewards[[int(i) for i in step_rows]].mean())
    return metrics


def run_train(recipe: LoadedRecipe, overwrite: bool = False, resume: bool = True, replay: bool = False) -> TrainSummary:
    cfg = recipe.train
    inputs = {"model": cfg.model, "input": cfg.inputs, "reference": cfg.reference}
    # A replay writes nothing, so it neither locks nor can destroy an input.
    claim = claim_output(cfg.out, inputs, distributed.is_main() and not replay)
    with claim:
        return train(recipe, overwrite, resume, replay)


def train(recipe: LoadedRecipe, overwrite: bool, resume: bool, replay: bool) -> TrainSummary:
    from rladctl.models.identity import model_identity
    from rladctl.objectives import get_objective, get_objective_record

    cfg: TrainConfig = recipe.train
    obj_cfg = recipe.objective
    objective = get_objective_record(obj_cfg.name)
    objective_fn = get_objective(obj_cfg.name)  # the public entry point: a caller may wrap the loss (tests do)
    check_config(cfg)
    check_packages(recipe.log)  # a missing tensorboard / wandb is refused before any row loads
    distributed.init(group_of_one=cfg.parallel == "fsdp")
    out, partial = Path(cfg.out), Path(f"{cfg.out}.partial")
    rows, refs = load_rows(cfg, objective)
    start_identity = model_identity(cfg.model)
    fp = run_fingerprint(cfg, obj_cfg, refs, start_identity)
    if replay:
        if not (is_complete(out) and read_manifest(out).get("fingerprint") == fp):
            raise ArtifactError(
                f"cannot replay {out}: it is not a complete checkpoint of these inputs",
                None,
                "re-run without replaying",
            )
        cfg, snap = dataclasses.replace(cfg, save_every=0), None  # writes nothing, not even snapshots
    elif already_done(out, partial, fp, overwrite):
        return summary_from(out, skipped=True)
    else:
        snap = prepare_output(out, partial, fp, resume)

    torch.manual_seed(cfg.seed)
    tokenizer, hf_model, model, device = load_policy(cfg, rows, refs)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Before any forward: FSDP2 leaves the root's parameters gathered after one (see distributed.reshard).
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    log(f"train: {len(rows)} rows, objective {obj_cfg.name}, {distributed.world_size()} rank(s)")
    fixed = fixed_logprobs(model, rows, cfg, obj_cfg, pad_id)
    global_start = load_start_optimizer(cfg, model, optimizer)
    model.train()

    run = TrainRun(
        cfg,
        obj_cfg,
        objective,
        out,
        partial,
        fp,
        model,
        tokenizer,
        optimizer,
        pad_id,
        manifest={
            "kind": S.CHECKPOINT,
            "fingerprint": fp,
            "inputs": refs,
            "start_model": start_identity,
            "objective": to_plain(obj_cfg),
            "train": to_plain(cfg),
            "policy_temperature": rows.temperature,
            "optimizer_state": cfg.save_optimizer,
        },
    )
    steps = schedule(len(rows), cfg)
    done, metrics = restore_snapshot(snap, model, optimizer) if snap is not None else (0, [])
    if snap is not None:
        log(f"resuming {out} from {snap.name} ({done} of {len(steps)} steps done)")
    started = time.perf_counter()
    with train_loggers(recipe, replay) as loggers:
        train_steps(run, objective_fn, rows, fixed, steps, done, metrics, global_start, loggers)
    if not distributed.all_finite(model.parameters()):
        raise diverged(
            f"the weights are not finite after step {global_start + len(steps)}",
            len(steps),
            out,
            partial,
            fp,
            cfg.model,
        )
    model.eval()
    seconds = time.perf_counter() - started
    if replay:
        match_saved_weights(out, hf_model)
    else:
        run.save(
            out,
            global_start + len(steps),
            metrics,
            {
                "steps": len(steps),
                "global_step": global_start + len(steps),
                "rows": len(rows),
                "timings": {"seconds": round(seconds, 3), "ranks": distributed.world_size(), "parallel": cfg.parallel},
                "final_metrics": metrics[-1] if metrics else {},
            },
            after=lambda: discard(partial),
            with_optimizer=cfg.save_optimizer,
        )
    if not distributed.is_fsdp(model):  # `rladctl run`: kept vLLM engines take the new weights in place
        engines.trained(out, hf_model)
    hand_on(out, model, hf_model, optimizer, device, global_start + len(steps))
    return summary_from(out, skipped=False)


def hand_on(out: Path, model, hf_model, optimizer, device, step: int) -> None:
    """`rladctl run`: the next stages start from memory, on every rank (rladctl/resident.py).

    DDP ranks hold the whole model: it is handed on as it is. FSDP2 ranks hold shards: each rank
    gathers the weights once, parameter by parameter, into a plain float32 copy on its CPU (which
    the next rollout copies to the GPU in its dtype and samples from with no collective per token,
    and the next train shards again), and keeps its own shard of the AdamW state where it is.
    """
    fsdp = distributed.is_fsdp(model)
    if not resident.keeps_on("cpu" if fsdp else str(device)):
        return
    optimizer.zero_grad(set_to_none=True)
    if fsdp:
        state = {"step": torch.tensor(step), "optimizer": distributed.sharded_optimizer_state(model, optimizer)}
        resident.hand_on(out, distributed.unsharded_copy(hf_model), torch.float32, "cpu", state | {"sharded": True})
    else:
        state = {"step": torch.tensor(step), "optimizer": optimizer.state_dict()}
        resident.hand_on(out, hf_model, torch.float32, str(device), state)


def train_loggers(recipe: LoadedRecipe, replay: bool) -> Loggers:
    """[log] writers of `rladctl train` alone, beside its checkpoint (<parent>/tensorboard/<name>/).
    `rladctl run` turns them off here and logs every iteration's steps itself; a replay logs nothing."""
    out = Path(recipe.train.out)
    return Loggers([]) if replay else open_loggers(recipe.log, out.parent, out.name, recipe.to_dict(), subdir=out.name)


def check_config(cfg: TrainConfig) -> None:
    for key in ("model", "out"):
        if not getattr(cfg, key):
            raise ConfigError(f"no {key} given", "for train", f"pass --{key} or set train.{key} in the recipe")
    check_ranges("train", cfg, {})  # a caller that built the config by hand skipped the loader's check


def run_fingerprint(cfg: TrainConfig, obj_cfg, refs: list[dict], start_identity: dict) -> str:
    """What makes two train calls the same run: inputs, objective, start weights and settings.

    How the work is spread (device, ranks, DDP or FSDP2), how often it snapshots and whether the
    AdamW state is saved do not change the result, so they are left out.
    """
    spread = ("out", "device", "save_every", "save_optimizer", "inputs", "model", "parallel")
    return fingerprint(
        {
            "kind": S.CHECKPOINT,
            "inputs": [r["content_id"] for r in refs],
            "objective": to_plain(obj_cfg),
            "model": {k: start_identity.get(k) for k in ("config_hash", "weights_hash")},
            "train": {k: v for k, v in to_plain(cfg).items() if k not in spread},
        }
    )


def already_done(out: Path, partial: Path, fp: str, overwrite: bool) -> bool:
    """True when ``out`` holds this very run's checkpoint; another run's output is refused unless ``overwrite``."""
    if is_complete(out):
        if read_manifest(out).get("fingerprint") == fp:
            log(f"[green]{out} is already complete for these inputs; nothing to do")
            # A kill between the final save and the clean-up leaves the snapshots: the checkpoint supersedes them.
            distributed.main_only(lambda: (discard(partial), remove_leftovers(out, partial)))
            return True
        if not overwrite:
            raise ArtifactError(
                f"output directory {out} holds a checkpoint from a different run",
                None,
                "choose another --out, or pass --overwrite to replace it",
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(
            f"output directory {out} is not empty and holds no complete checkpoint",
            None,
            "choose another --out, or pass --overwrite to replace it",
        )
    return False


def load_policy(cfg: TrainConfig, rows: Rows, refs: list[dict]):
    """The student in float32 as (tokenizer, Hugging Face model, policy wrapped for the ranks, device)."""
    from rladctl.models.loading import load_model, resolve_device
    from rladctl.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    device = torch.device(resolve_device(distributed.device(cfg.device)))
    # FSDP2 moves each rank's shards to the device: the whole model never has to fit on one GPU.
    hf_model = load_model(
        cfg.model,
        dtype="float32",
        device="cpu" if cfg.parallel == "fsdp" else str(device),
        trust_remote_code=cfg.trust_remote_code,
        for_training=True,
    )
    check_vocab(hf_model, tokenizer, rows, refs)
    if cfg.gradient_checkpointing:
        # The reentrant variant needs DDP's static_graph and does not work with FSDP2.
        wrapped = distributed.enabled() or cfg.parallel == "fsdp"
        hf_model.gradient_checkpointing_enable(
            **({"gradient_checkpointing_kwargs": {"use_reentrant": False}} if wrapped else {})
        )
    model = distributed.wrap(
        LogprobPolicy(hf_model), cfg.parallel, device, getattr(hf_model.get_decoder(), "layers", ())
    )
    return tokenizer, hf_model, model, device


@dataclass
class FixedLogprobs:
    """Per-row float32 log-probs that stay fixed for the whole call (one tensor per row, or None)."""

    old: list[torch.Tensor] | None  # lp_old; None: each step's own detached lp (one step per call)
    ref: list[torch.Tensor] | None  # lp_ref, when objective.ref_beta > 0
    teacher: list[torch.Tensor] | None  # lp_T, from a scored artifact
    sampler_old_gap: float | None  # mean |lp_old - lp_sampler| over every token, when lp_old was recomputed here


def fixed_logprobs(model, rows: Rows, cfg: TrainConfig, obj_cfg, pad_id: int) -> FixedLogprobs:
    """lp_old and lp_ref come from the start model, before any update (also when resuming)."""
    # One optimizer step per call (the on-policy loop's default): lp_old is that step's own detached
    # lp, so the separate pass over every row is skipped (about 15% of an RLAD iteration on CPU).
    single_step = cfg.recompute_old and cfg.epochs == 1 and (cfg.mini_batches == 1 or len(rows) == 1)
    need_start = (cfg.recompute_old and not single_step) or obj_cfg.ref_beta > 0
    start_lp = start_logprobs(model, rows, cfg, pad_id) if need_start else None
    distributed.reshard(model)
    sampler = [torch.tensor(s, dtype=torch.float32) for s in rows.sampler]
    teacher = [torch.tensor(t, dtype=torch.float32) for t in rows.teacher] if rows.teacher is not None else None
    old = None if single_step else flat_slices(rows, start_lp) if cfg.recompute_old else sampler
    ref = reference_logprobs(cfg, obj_cfg, rows, list(range(len(rows))), pad_id, start_lp)
    gap = (
        float(torch.cat([(a - b).abs() for a, b in zip(old, sampler)]).mean())
        if cfg.recompute_old and old is not None
        else None
    )
    return FixedLogprobs(old, ref, teacher, gap)


def load_start_optimizer(cfg: TrainConfig, model, optimizer) -> int:
    """The AdamW state and global step the start model was saved (or handed on in memory) with; 0 without."""
    state = (
        (resident.take_training_state(cfg.model) or load_training_state(cfg.model)) if cfg.continue_optimizer else None
    )
    if state is None:
        return 0
    if "optimizer" in state:
        load = distributed.load_sharded_optimizer_state if state.get("sharded") else distributed.load_optimizer_state
        load(model, optimizer, state["optimizer"])  # also restores the saved hyperparameters,
        for group in optimizer.param_groups:  # but this run's recipe decides them
            group.update(betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    else:
        log(
            f"[yellow]{cfg.model} was saved without its AdamW state (run.optimizer_state_every): the optimizer starts afresh"
        )
    return int(state["step"])


@dataclass
class TrainRun:
    """What the optimizer steps and the saves of one train call share."""

    cfg: TrainConfig
    obj_cfg: Any
    objective: Any  # obj_cfg's registry record, rladctl.objectives.Objective
    out: Path
    partial: Path
    fp: str
    model: torch.nn.Module  # a LogprobPolicy, bare or inside DDP / FSDP2
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    pad_id: int
    manifest: dict  # what every save's manifest starts with

    def save(
        self, path: Path, step: int, metrics: list[dict], extra: dict, after=None, with_optimizer: bool = True
    ) -> None:
        optimizer = self.optimizer if with_optimizer else None
        save_whole(path, self.model, self.tokenizer, optimizer, step, metrics, self.manifest | extra, after)


def train_steps(
    run: TrainRun,
    objective_fn,
    rows: Rows,
    fixed: FixedLogprobs,
    steps: list[np.ndarray],
    done: int,
    metrics: list[dict],
    global_start: int,
    loggers: Loggers | None = None,
) -> None:
    """Optimizer steps ``done`` onwards, appending each one's metrics (and sending them to ``loggers``);
    snapshots every ``save_every``.

    A step whose loss or gradient norm is not finite changes no weight; ``max_bad_steps`` of them in
    a row, or one at the end, stop the run with the newest snapshot from before them named.
    """
    cfg, obj_cfg, optimizer = run.cfg, run.obj_cfg, run.optimizer
    horizon = cfg.total_steps or (global_start + len(steps))
    bad = 0
    with meter(f"train {run.out.name}", total=len(steps)) as bar:
        bar.advance(done)
        for k in range(done, len(steps)):
            step = global_start + k
            lr = lr_at(cfg, step, horizon)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_cfg = run.objective.config_at(obj_cfg, step, horizon)  # e.g. an annealed kl_beta
            t0 = time.perf_counter()
            m = optimizer_step(
                run.model,
                optimizer,
                objective_fn,
                step_cfg,
                rows,
                steps[k],
                fixed.old,
                fixed.ref,
                fixed.teacher,
                cfg,
                run.pad_id,
            )
            finite = math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])  # global values: every rank agrees
            if finite:
                apply_update(optimizer, step, lr, run.out, run.partial, run.fp, cfg.model)
                bad = 0
            else:
                optimizer.zero_grad(set_to_none=True)  # skipped: the weights stay as they were
                bad += 1
            seconds = time.perf_counter() - t0
            if fixed.sampler_old_gap is not None:
                m["sampler_old_gap"] = fixed.sampler_old_gap
            m.update(
                step=step + 1,
                epoch=k * cfg.epochs // len(steps),
                lr=lr,
                skipped=not finite,
                dropped_groups=rows.dropped_groups,
                tokens_per_s=m["tokens"] / seconds,
                seconds=seconds,
            )
            m.update(run.objective.scheduled(obj_cfg, step, horizon))  # each scheduled value exactly, not a token mean
            metrics.append(m)
            if loggers is not None:
                loggers.log(train_scalars(m), m["step"])
            bar.advance(1, m["tokens"])
            # A skipped step leaves the weights that gave the non-finite loss: never ship them as final.
            if bad >= cfg.max_bad_steps or (bad and k + 1 == len(steps)):
                what = f"the loss was non-finite for {bad} consecutive step{'s' * (bad > 1)} (at step {step + 1}"
                what += ")" if bad >= cfg.max_bad_steps else ", the last: the final weights are those that gave it)"
                raise diverged(what, k - bad + 1, run.out, run.partial, run.fp, cfg.model)
            if finite and cfg.save_every and (k + 1) % cfg.save_every == 0 and k + 1 < len(steps):
                run.save(
                    run.partial / f"step-{k + 1:06d}",
                    step + 1,
                    metrics,
                    {"snapshot_step": k + 1},
                    after=lambda: prune_snapshots(run.partial, keep=2),
                )


def reference_logprobs(cfg: TrainConfig, obj_cfg, rows: Rows, index: list[int], pad_id: int, start_lp) -> list | None:
    if obj_cfg.ref_beta <= 0:
        return None
    if not cfg.reference:
        return flat_slices(rows, start_lp)
    from rladctl.models.loading import load_model

    ref_model = load_model(
        cfg.reference, dtype=cfg.dtype, device=distributed.device(cfg.device), trust_remote_code=cfg.trust_remote_code
    )
    values = flat_slices(rows, row_logprobs(ref_model, rows, index, cfg, pad_id, rows.temperature))
    del ref_model
    return values


def summary_from(out: Path, skipped: bool) -> TrainSummary:
    manifest = read_manifest(out) or {}
    metrics = read_metrics(out)
    tokens = sum(int(m.get("tokens", 0)) for m in metrics)
    seconds = float(manifest.get("timings", {}).get("seconds", 0.0))
    return TrainSummary(
        out=str(out),
        steps=len(metrics),
        rows=int(manifest.get("rows", 0)),
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        loss_last=float(metrics[-1]["loss"]) if metrics else float("nan"),
        reward_mean=float(np.mean([m["reward_mean"] for m in metrics])) if metrics else 0.0,
        skipped_steps=sum(1 for m in metrics if m.get("skipped")),
        skipped=skipped,
    )
