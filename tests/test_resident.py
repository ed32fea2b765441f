"""Models kept in memory by `rladctl run`: reused only while their files are unchanged, taken for
training, handed on by train; a run with them equals a run that loads everything from disk."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TASK_SETS

from rladctl import resident
from rladctl.config import load_recipe
from rladctl.models.loading import load_model


def test_loads_are_shared_only_inside_keep_models(models):
    assert load_model(models["teacher"], dtype="float32", device="cpu") is not load_model(
        models["teacher"], dtype="float32", device="cpu"
    )
    with resident.keep_models():
        first = load_model(models["teacher"], dtype="float32", device="cpu")
        assert load_model(models["teacher"], dtype="float32", device="cpu") is first
        assert not first.training
    assert resident.active() is None
    with resident.keep_models(enabled=False):
        assert load_model(models["teacher"], dtype="float32", device="cpu") is not first


def test_a_rewritten_directory_is_loaded_again(models, tmp_path):
    copy = tmp_path / "teacher"
    shutil.copytree(models["teacher"], copy)
    with resident.keep_models():
        first = load_model(copy, dtype="float32", device="cpu")
        weights = copy / "model.safetensors"
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
        assert load_model(copy, dtype="float32", device="cpu") is not first


def test_a_model_taken_for_training_is_never_handed_out_again(models):
    with resident.keep_models():
        frozen = load_model(models["student"], dtype="float32", device="cpu")
        bf16 = load_model(models["student"], dtype="bfloat16", device="cpu")
        trained = load_model(models["student"], dtype="float32", device="cpu", for_training=True)
        assert trained is frozen and trained.training
        again = load_model(models["student"], dtype="float32", device="cpu")
        assert again is not trained and again is not bf16  # its copies went with it


def test_casting_the_whole_model_would_not_be_exact(models):
    """from_pretrained(dtype=bf16) keeps float32 rotary frequencies that model.to(bf16) would round:
    why a kept model's copy in another dtype casts only its parameters."""
    bf16 = load_model(models["student"], dtype="bfloat16", device="cpu")
    cast = load_model(models["student"], dtype="float32", device="cpu").to(torch.bfloat16)
    assert any(bf16.get_buffer(n).dtype != b.dtype for n, b in cast.named_buffers())


def test_train_hands_on_what_it_saved(shards, tmp_path):
    from safetensors.torch import load_file

    from rladctl.stages.train import run_train
    from rladctl.store.checkpoint import load_training_state

    out = tmp_path / "ckpt"
    recipe = load_recipe(
        None,
        [
            f'train.model="{shards["student"]}"',
            f'train.inputs=["{shards["scored"]}"]',
            f'train.out="{out}"',
            "train.lr=1e-3",
        ],
    )
    with resident.keep_models():
        run_train(recipe)
        state = resident.take_training_state(out)
        model = load_model(out, dtype="float32", device="cpu", for_training=True)
        assert resident.take_training_state(out) is None  # taken once
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    on_disk = load_training_state(out)
    assert int(state["step"]) == int(on_disk["step"]) == 1
    for i, values in on_disk["optimizer"]["state"].items():
        assert all(torch.equal(values[k], state["optimizer"]["state"][i][k]) for k in values)


def _tree(run_dir: Path) -> dict[str, bytes]:
    """Every Parquet part and every weights file of the run, by path."""
    files = [*run_dir.rglob("part-*.parquet"), *run_dir.glob("iter-*/checkpoint/model.safetensors")]
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in sorted(files)}


@pytest.mark.parametrize(
    "dtype", ["float32", "bfloat16"]
)  # float32: rollout samples with the very object train then trains
def test_a_run_with_kept_models_writes_what_a_run_loading_from_disk_writes(models, tmp_path, dtype):
    from rladctl.stages.run import run_loop

    sets = TASK_SETS + [
        f'run.student="{models["student"]}"',
        f'run.teacher="{models["teacher"]}"',
        "run.iterations=2",
        "run.eval_every=1",
        "rollout.num_prompts=2",
        "rollout.group_size=4",
        "rollout.max_new_tokens=8",
        f'rollout.dtype="{dtype}"',
        "eval.pass_at=2",
        "eval.num_prompts=2",
        "eval.max_new_tokens=6",
        "train.lr=1e-3",
        'objective.name="trrd"',
    ]
    trees = {}
    for keep in (True, False):
        run_dir = tmp_path / f"keep-{keep}"
        run_loop(load_recipe(None, [*sets, f'run.dir="{run_dir}"', f"run.keep_models={str(keep).lower()}"]))
        trees[keep] = _tree(run_dir)
        metrics = [
            json.loads(line)
            for line in (run_dir / "iter-0001" / "checkpoint" / "metrics.jsonl").read_text().splitlines()
        ]
        trees[keep]["metrics"] = json.dumps(
            [{k: v for k, v in m.items() if k not in ("seconds", "tokens_per_s")} for m in metrics]
        ).encode()
    assert len(trees[True]) == 2 * 3 + 3 + 1  # rollouts, scored, weights per iteration; 3 evaluations; metrics
    assert trees[True] == trees[False]


def test_skipped_optimizer_states_are_rebuilt_by_replay_after_an_interruption(models, tmp_path, monkeypatch):
    """optimizer_state_every = 3 over 3 iterations: only the last checkpoint holds AdamW's state. A
    run stopped before iteration 2 resumes in a fresh process (nothing in memory), replays the
    trains of iterations 0 and 1 to rebuild it, and ends exactly where an uninterrupted run ends."""
    from rladctl.stages import rollout as rollout_stage
    from rladctl.stages.run import run_loop
    from rladctl.store.checkpoint import load_training_state, read_manifest

    sets = TASK_SETS + [
        f'run.student="{models["student"]}"',
        f'run.teacher="{models["teacher"]}"',
        "run.iterations=3",
        "run.eval_before=false",
        "run.optimizer_state_every=3",
        "run.keep_last=0",  # every checkpoint stays, to be read below (tests/faults/test_prune.py prunes)
        "rollout.num_prompts=2",
        "rollout.group_size=4",
        "rollout.max_new_tokens=8",
        "eval.pass_at=2",
        "eval.num_prompts=2",
        "eval.max_new_tokens=4",
        "train.lr=1e-3",
        'objective.name="trrd"',
    ]
    clean = tmp_path / "clean"
    run_loop(load_recipe(None, [*sets, f'run.dir="{clean}"']))
    assert [read_manifest(clean / f"iter-000{i}" / "checkpoint")["optimizer_state"] for i in range(3)] == [
        False,
        False,
        True,
    ]
    assert "optimizer" not in load_training_state(clean / "iter-0001" / "checkpoint")
    assert "optimizer" in load_training_state(clean / "iter-0002" / "checkpoint")

    stopped = tmp_path / "stopped"
    real = rollout_stage.run_rollout

    def stop_at_iteration_2(recipe, **kw):
        if "iter-0002" in recipe.rollout.out:
            raise KeyboardInterrupt
        return real(recipe, **kw)

    monkeypatch.setattr(rollout_stage, "run_rollout", stop_at_iteration_2)
    try:
        run_loop(load_recipe(None, [*sets, f'run.dir="{stopped}"']))
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(rollout_stage, "run_rollout", real)
    from rladctl.stages import train as train_stage

    replays, real_train = [], train_stage.run_train

    def spy(recipe, **kw):
        if kw.get("replay"):
            replays.append(Path(recipe.train.out).parent.name)
        return real_train(recipe, **kw)

    monkeypatch.setattr(train_stage, "run_train", spy)
    run_loop(load_recipe(None, [*sets, f'run.dir="{stopped}"']))
    assert replays == ["iter-0000", "iter-0001"]
    assert _tree(stopped) == _tree(clean)
    final = load_training_state(stopped / "iter-0002" / "checkpoint")["optimizer"]["state"]
    expected = load_training_state(clean / "iter-0002" / "checkpoint")["optimizer"]["state"]
    assert all(torch.equal(final[i][k], expected[i][k]) for i in expected for k in expected[i])


def test_models_on_a_gpu_are_kept_only_where_allowed(monkeypatch):
    """Off when the GPU's memory belongs to a backend's engine (vLLM claims a fraction of it)."""
    with resident.keep_models() as kept:
        kept.put(Path("/nowhere"), torch.float32, "cuda:0", object())
        resident.hand_on(Path("/nowhere"), object(), torch.float32, "cuda", {"step": torch.tensor(1)})
        assert not kept.models and not resident.has_training_state("/nowhere")
        kept.put(Path("/nowhere"), torch.float32, "cpu", object())
        assert len(kept.models) == 1
    with resident.keep_models(on_device=True) as kept:
        resident.hand_on(Path("/nowhere"), object(), torch.float32, "cuda:0", {"step": torch.tensor(1)})
        assert len(kept.models) == 1 and resident.has_training_state("/nowhere")
        assert resident.keeps_on("cuda:1") and resident.keeps_on("cpu")
    assert not resident.keeps_on("cpu")


def test_a_kept_model_serves_another_dtype_as_from_pretrained_loads_it(models):
    """The bfloat16 copy of a kept float32 model: parameters cast, float32 rotary buffers kept, tied
    head still tied: every tensor equal, in value and dtype, to from_pretrained(dtype=bfloat16)'s."""
    disk = load_model(models["student"], dtype="bfloat16", device="cpu")
    with resident.keep_models():
        fp32 = load_model(models["student"], dtype="float32", device="cpu")
        bf16 = load_model(models["student"], dtype="bfloat16", device="cpu")
        assert bf16 is not fp32 and load_model(models["student"], dtype="bfloat16", device="cpu") is bf16
    got = dict(bf16.named_parameters(remove_duplicate=False)) | dict(bf16.named_buffers())
    want = dict(disk.named_parameters(remove_duplicate=False)) | dict(disk.named_buffers())
    assert got.keys() == want.keys() and any(t.dtype == torch.float32 for t in want.values())
    assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
    assert bf16.get_input_embeddings().weight is bf16.get_output_embeddings().weight
    assert next(fp32.parameters()).dtype == torch.float32  # the kept model itself is not cast
    with resident.keep_models():  # never cast up: float32 from a kept bfloat16 model would be rounded
        bf16 = load_model(models["student"], dtype="bfloat16", device="cpu")
        fp32 = load_model(models["student"], dtype="float32", device="cpu")
    disk = load_model(models["student"], dtype="float32", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(fp32.parameters(), disk.parameters()))


def test_an_unsharded_copy_holds_every_tensor_and_the_tie(models):
    from rladctl.distributed import unsharded_copy

    model = load_model(models["student"], dtype="float32", device="cpu")
    copy = unsharded_copy(model)
    got = dict(copy.named_parameters(remove_duplicate=False)) | dict(copy.named_buffers())
    want = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    assert got.keys() == want.keys()
    assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
    assert all(got[k].data_ptr() != want[k].data_ptr() for k in want)
    assert copy.get_input_embeddings().weight is copy.get_output_embeddings().weight


def test_checkpoints_skip_the_optimizer_state_only_where_train_hands_it_on(models, tmp_path, monkeypatch):
    from rladctl.stages.run import make_plan, saves_optimizer_state

    recipe = load_recipe(
        None,
        [
            f'run.dir="{tmp_path}"',
            f'run.student="{models["student"]}"',
            'objective.name="grpo"',
            "run.iterations=25",
            "run.optimizer_state_every=10",
        ],
    )
    plan = make_plan(recipe)
    assert [i for i in range(25) if saves_optimizer_state(recipe, plan, i)] == [9, 19, 24]
    base = [f'run.dir="{tmp_path}"', f'run.student="{models["student"]}"', "run.iterations=25"]
    for off in ("run.keep_models=false", 'train.device="cuda" rollout.backend="vllm"'):
        other = load_recipe(None, [*base, *off.split()])
        assert all(saves_optimizer_state(other, plan, i) for i in range(25)), off
    for on in ('train.device="cuda"', 'train.parallel="fsdp" rollout.backend="vllm"', 'rollout.backend="vllm"'):
        other = load_recipe(None, [*base, *on.split(), "run.optimizer_state_every=10"])
        assert [i for i in range(25) if saves_optimizer_state(other, plan, i)] == [9, 19, 24], on
    monkeypatch.setenv("WORLD_SIZE", "2")  # every rank hands its state on
    assert [i for i in range(25) if saves_optimizer_state(recipe, plan, i)] == [9, 19, 24]


def test_a_tokenizer_is_loaded_once_per_content_inside_keep_models(models, tmp_path):
    from rladctl.models.tokenizer import load_tokenizer

    copy = tmp_path / "checkpoint"  # a checkpoint copies its tokenizer's files: same bytes, new directory
    shutil.copytree(models["student"], copy)
    assert load_tokenizer(models["student"]) is not load_tokenizer(models["student"])  # outside a run
    with resident.keep_models():
        first = load_tokenizer(models["student"])
        assert load_tokenizer(copy) is first
        config = copy / "tokenizer_config.json"
        config.write_text(config.read_text().replace("}", ', "model_max_length": 77}', 1))
        changed = load_tokenizer(copy)
        assert changed is not first and changed.model_max_length == 77
        assert load_tokenizer(models["student"]) is first
