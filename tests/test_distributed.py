"""torchrun on CPU (gloo): two ranks write the same artifacts, and make the same updates, as one process.

Every multi-rank run here is a real ``python -m torch.distributed.run --nproc-per-node 2 -m rladctl``
subprocess; the one-process references run in-process with the same recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TASK_SETS, sets
from test_train import max_change, weights

from rladctl.config import load_recipe
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, open_artifact
from rladctl.store.checkpoint import load_training_state, read_manifest, read_metrics

ROLLOUT_SETS = [
    *TASK_SETS,
    "rollout.max_new_tokens=8",
    "rollout.prompts_per_part=1",
    "rollout.group_size=2",
    "rollout.num_prompts=5",
]
# 16 rows in steps of 6, 5 and 5 rows: the ranks get 3 + 3 or 3 + 2 of them. Micro-batches of at most
# 34 padded tokens hold one or two rows (16 to 18 tokens each), so the ranks make different numbers
# of passes and the one with fewer pads them with throwaway ones.
TRAIN_SETS = ["train.mini_batches=3", "train.lr=1e-3", "train.micro_batch_tokens=34", "train.save_every=0"]


def torchrun(*args: str, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m rladctl ARGS`` (a free port each time)."""
    env = dict(os.environ, RLADCTL_QUIET="1", OMP_NUM_THREADS="1")
    env.pop("RLADCTL_DEBUG", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "rladctl",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def parts(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("part-*.parquet"))}


def keys(path: Path) -> list[tuple[str, int]]:
    table = open_artifact(path, [S.ROLLOUTS, S.SCORED]).table([S.PROMPT_ID, S.SAMPLE_IDX])
    return list(zip(table[S.PROMPT_ID].to_pylist(), table[S.SAMPLE_IDX].to_pylist()))


def one_process_artifacts(models, root: Path) -> None:
    import torch

    from rladctl.stages.rollout import run_rollout
    from rladctl.stages.score_teacher import run_score_teacher

    # torchrun's ranks run one thread each (OMP_NUM_THREADS=1): match it, since byte equality
    # includes the last bit of every float and CPU kernels sum in a thread-dependent order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_rollout(
            load_recipe(None, [*ROLLOUT_SETS, f'rollout.model="{models["student"]}"', f'rollout.out="{root / "r"}"'])
        )
        run_score_teacher(
            load_recipe(
                None,
                [
                    f'score_teacher.teacher="{models["teacher"]}"',
                    f'score_teacher.input="{root / "r"}"',
                    f'score_teacher.out="{root / "s"}"',
                ],
            )
        )
    finally:
        torch.set_num_threads(threads)


def test_rollout_and_score_teacher_on_two_ranks_write_the_one_process_artifacts(models, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one_process_artifacts(models, one)
    done = torchrun(
        "rollout", "--model", str(models["student"]), "--out", str(two / "r"), "--json", *sets(*ROLLOUT_SETS)
    )
    assert json.loads(done.stdout)["rows"] == 10  # one summary: rank 0's
    torchrun("score-teacher", "--teacher", str(models["teacher"]), "--input", str(two / "r"), "--out", str(two / "s"))

    for kind in ("r", "s"):
        manifest = json.loads((two / kind / MANIFEST).read_text())
        assert [p["file"] for p in manifest["parts"]] == [f"part-{i:05d}.parquet" for i in range(5)]
        assert (
            manifest["rows"] == 10 and manifest["timings"]["ranks"] == 2 and manifest["timings"]["parts_written"] == 5
        )
        assert keys(two / kind) == keys(one / kind) and len(set(keys(two / kind))) == 10
        # A part's rows depend only on its index: the same bytes, whichever rank wrote them.
        assert parts(two / kind) == parts(one / kind)
        assert not [p for p in (two / kind).iterdir() if ".tmp-" in p.name]


def test_two_ranks_resume_a_partial_artifact_writing_only_the_missing_parts(models, tmp_path):
    import shutil

    one_process_artifacts(models, tmp_path / "one")
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "one" / "r", partial)
    # As a killed run leaves it: no manifest, rank 1's part 3 missing, a dead writer's temporary file.
    (partial / MANIFEST).unlink()
    (partial / "part-00003.parquet").unlink()
    (partial / ".part-00001.parquet.tmp-999999").write_bytes(b"half")
    torchrun("rollout", "--model", str(models["student"]), "--out", str(partial), *sets(*ROLLOUT_SETS))
    assert json.loads((partial / MANIFEST).read_text())["timings"]["parts_written"] == 1
    assert parts(partial) == parts(tmp_path / "one" / "r")
    assert not [p for p in partial.iterdir() if ".tmp-" in p.name]


def one_process(shards, out: Path, *extra: str):
    import torch

    from rladctl.stages.train import run_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's ranks (OMP_NUM_THREADS=1): same kernel summation order
    try:
        return _train_one(run_train, shards, out, *extra)
    finally:
        torch.set_num_threads(threads)


def _train_one(run_train, shards, out: Path, *extra: str):
    return run_train(
        load_recipe(
            None,
            [
                f'train.model="{shards["student"]}"',
                f'train.inputs=["{shards["scored"]}"]',
                f'train.out="{out}"',
                'objective.name="trrd"',
                *TRAIN_SETS,
                *extra,
            ],
        )
    )


def two_ranks(shards, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return torchrun(
        "train",
        "--model",
        str(shards["student"]),
        "--input",
        str(shards["scored"]),
        "--out",
        str(out),
        "--objective",
        "trrd",
        "--json",
        *sets(*TRAIN_SETS, *extra),
    )


def assert_same_run(a: Path, b: Path) -> None:
    losses = lambda d: [m["loss"] for m in read_metrics(d)]  # noqa: E731
    assert len(losses(a)) == 3 and losses(a) == pytest.approx(losses(b), abs=1e-5)
    assert [m["tokens"] for m in read_metrics(a)] == [m["tokens"] for m in read_metrics(b)]
    assert [m["grad_norm"] for m in read_metrics(a)] == pytest.approx(
        [m["grad_norm"] for m in read_metrics(b)], rel=1e-4
    )
    assert max_change(weights(a), weights(b)) <= 1e-5


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_train_on_two_ranks_equals_one_process(shards, tmp_path, parallel):
    one_process(shards, tmp_path / "one")
    done = two_ranks(shards, tmp_path / "two", f'train.parallel="{parallel}"')
    assert json.loads(done.stdout)["steps"] == 3
    assert_same_run(tmp_path / "two", tmp_path / "one")
    assert max_change(weights(tmp_path / "two"), weights(shards["student"])) > 1e-4  # not two no-ops
    manifest = read_manifest(tmp_path / "two")
    assert manifest["timings"]["ranks"] == 2 and manifest["timings"]["parallel"] == parallel
    # The optimizer state is saved whole, in a single process's form, whatever the parallelism.
    state, reference = (
        load_training_state(tmp_path / "two")["optimizer"],
        load_training_state(tmp_path / "one")["optimizer"],
    )
    assert state["state"].keys() == reference["state"].keys()
    assert all(
        torch.allclose(state["state"][i]["exp_avg"], reference["state"][i]["exp_avg"], atol=1e-6)
        for i in reference["state"]
    )


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_one_process_snapshot_resumes_on_two_ranks(shards, tmp_path, monkeypatch, parallel):
    import rladctl.stages.train as train

    one_process(shards, tmp_path / "full", "train.mini_batches=4", "train.save_every=1")
    killed = tmp_path / "killed"

    def crash(*args, **kwargs):  # the process dies right after its first snapshot
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "prune_snapshots", crash)
    with pytest.raises(KeyboardInterrupt):
        one_process(shards, killed, "train.mini_batches=4", "train.save_every=1")
    assert [p.name for p in (tmp_path / "killed.partial").iterdir()] == ["step-000001"]
    two_ranks(shards, killed, "train.mini_batches=4", "train.save_every=1", f'train.parallel="{parallel}"')
    metrics = read_metrics(killed)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["loss"] for m in metrics] == pytest.approx([m["loss"] for m in read_metrics(tmp_path / "full")], abs=1e-5)
    assert max_change(weights(killed), weights(tmp_path / "full")) <= 1e-5
    assert not (tmp_path / "killed.partial").exists()


def test_one_process_needs_no_process_group_and_owns_everything(monkeypatch):
    from rladctl import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.init()
    assert not torch.distributed.is_initialized() and distributed.is_main()
    assert distributed.my_share([0, 1, 2]) == [0, 1, 2] and distributed.owns(7)
    assert distributed.all_reduce_floats([1.5, 2.0]) == [1.5, 2.0] and distributed.all_gather_objects("x") == ["x"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.my_share([0, 1, 2, 3, 4]) == [1, 3] and not distributed.owns(4) and not distributed.is_main()


def test_vllm_under_torchrun_is_refused_with_a_pointer_to_tensor_parallelism(monkeypatch):
    from rladctl.backends import check_ranks
    from rladctl.errors import ConfigError

    monkeypatch.setattr("rladctl.backends.vllm.import_vllm", lambda: None)  # as if vllm were installed
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="run it as one process .* tensor_parallel_size"):
        check_ranks("vllm", False, "score-teacher")
    check_ranks("hf", False, "score-teacher")  # data-parallel hf is fine
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_ranks("vllm", False, "score-teacher")
