"""The numerically sensitive paths on every device: the CPU here and in CI, CUDA where there is one.

A GPU brings other kernels (cuBLAS, SDPA, fused softmax), autocast on another device type and other
dtype defaults. Each test below runs on the CPU, so its code is exercised by every CI run, and again
on CUDA under the ``gpu`` marker (skipped without one) against the same CPU-made references. A GPU
session runs them with ``pytest -m gpu tests/test_devices.py`` (``benchmarks/gpu_session.sh`` does).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TASK_SETS, run_cli, sets

from rladctl.backends.logprobs import lm_head_logprobs
from rladctl.config import load_recipe
from rladctl.store import schema as S
from rladctl.store.artifacts import open_artifact

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def naive_logprobs(h_NH: torch.Tensor, w_VH: torch.Tensor, targets_N: torch.Tensor) -> torch.Tensor:
    """The full [N, V] log_softmax, in float32, that autograd differentiates."""
    logp_NV = torch.log_softmax((h_NH @ w_VH.T).float(), dim=-1)
    return logp_NV.gather(-1, targets_N[:, None]).squeeze(-1)


def random_case(device: str, n: int = 257, v: int = 4_099, hidden: int = 64, seed: int = 0):
    """Made on the CPU, then moved, so every device sees the same numbers. N and V are prime: ragged chunks."""
    gen = torch.Generator().manual_seed(seed)
    h_NH = torch.randn(n, hidden, generator=gen)
    w_VH = torch.randn(v, hidden, generator=gen) * 0.5
    targets_N = torch.randint(0, v, (n,), generator=gen)
    grad_N = torch.randn(n, generator=gen)
    return [t.to(device) for t in (h_NH, w_VH, targets_N, grad_N)]


def grads(fn, h_NH, w_VH, grad_N):
    h, w = h_NH.clone().requires_grad_(), w_VH.clone().requires_grad_()
    out_N = fn(h, w)
    (out_N * grad_N).sum().backward()
    return out_N.detach(), h.grad, w.grad


@pytest.mark.parametrize("device", DEVICES)
def test_fused_logprobs_and_gradients_equal_naive_within_1e5_in_float32(device):
    h_NH, w_VH, targets_N, grad_N = random_case(device)
    ref = grads(lambda h, w: naive_logprobs(h, w, targets_N), h_NH, w_VH, grad_N)
    got = grads(
        lambda h, w: lm_head_logprobs(h, w, targets_N, 1.0, chunk_tokens=64, chunk_vocab=1_000), h_NH, w_VH, grad_N
    )
    for name, g, r in zip(("log-probs", "d/dh", "d/dW"), got, ref):
        assert g.device.type == device and g.dtype == torch.float32, name
        torch.testing.assert_close(g, r, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name} on {device}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_forward_with_backward_outside_it(device):
    """The train stage's pattern: forward under bf16 autocast (bf16 hidden states, float32 weight),
    backward after the block; the backward must recompute the logits in the forward's dtype."""
    h_NH, w_VH, targets_N, grad_N = random_case(device, seed=7)
    ref = grads(lambda h, w: naive_logprobs(h, w, targets_N), h_NH, w_VH, grad_N)

    def under_autocast(h, w):
        with torch.autocast(device, dtype=torch.bfloat16):
            return lm_head_logprobs(h.bfloat16(), w, targets_N, 1.0, chunk_tokens=64, chunk_vocab=1_000)

    got = grads(under_autocast, h_NH, w_VH, grad_N)
    assert got[0].dtype == got[1].dtype == got[2].dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: about 1% of each quantity's scale
    for name, g, r in zip(("log-probs", "d/dh", "d/dW"), got, ref):
        torch.testing.assert_close(
            g, r, atol=3e-2 * float(r.abs().max()), rtol=0, msg=lambda m, name=name: f"{name} on {device}: {m}"
        )


def rollout_sets(models, out, device: str) -> list[str]:
    return [
        f'rollout.model="{models["student"]}"',
        f'rollout.out="{out}"',
        "rollout.num_prompts=8",
        "rollout.group_size=4",
        "rollout.max_new_tokens=12",
        "rollout.prompts_per_part=4",
        'rollout.dtype="float32"',
        f'rollout.device="{device}"',
    ]


def score(models, inp, out, device: str):
    from rladctl.stages.score_teacher import run_score_teacher

    run_score_teacher(
        load_recipe(
            None,
            [
                f'score_teacher.teacher="{models["student"]}"',
                f'score_teacher.input="{inp}"',
                f'score_teacher.out="{out}"',
                'score_teacher.dtype="float32"',
                f'score_teacher.device="{device}"',
                "score_teacher.micro_batch_tokens=64",
            ],
        )
    )
    return open_artifact(out, [S.SCORED]).table()


def worst_gap(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(float((torch.tensor(x) - torch.tensor(y)).abs().max()) for x, y in zip(a, b) if x)


@pytest.mark.parametrize("device", DEVICES)
def test_sampler_and_teacher_logprobs_on_the_device_agree_with_the_cpu(device, models, tmp_path):
    """Rollout on the device, then the student scores its own rows on the device and on the CPU: the
    sampler's KV-cached log-probs, the device's forward pass and the CPU's agree within 1e-4."""
    from rladctl.stages.rollout import run_rollout

    run_rollout(load_recipe(None, TASK_SETS + rollout_sets(models, tmp_path / "r", device)))
    rows = open_artifact(tmp_path / "r", [S.ROLLOUTS]).table()
    assert rows.num_rows == 32 and sum(len(c) for c in rows[S.COMPLETION_TOKEN_IDS].to_pylist()) > 32
    on_device = score(models, tmp_path / "r", tmp_path / "s-dev", device)
    on_cpu = score(models, tmp_path / "r", tmp_path / "s-cpu", "cpu")
    sampler = on_device[S.SAMPLER_LOGPROBS].to_pylist()
    assert worst_gap(sampler, on_device[S.TEACHER_LOGPROBS].to_pylist()) < 1e-4
    assert worst_gap(on_device[S.TEACHER_LOGPROBS].to_pylist(), on_cpu[S.TEACHER_LOGPROBS].to_pylist()) < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_training_on_the_device_steps_like_float32_on_the_cpu(device, shards, tmp_path):
    """train.dtype = "bfloat16" autocasts the forward (the CUDA default); weights stay float32 and the
    update points where a float32 CPU run's does."""
    from safetensors.torch import load_file

    from rladctl.stages.train import run_train
    from rladctl.store.checkpoint import read_metrics

    def train(out, device, dtype):
        run_train(
            load_recipe(
                None,
                [
                    f'train.model="{shards["student"]}"',
                    f'train.inputs=["{shards["scored"]}"]',
                    f'train.out="{out}"',
                    "train.mini_batches=2",
                    "train.lr=1e-3",
                    'objective.name="trrd"',
                    f'train.dtype="{dtype}"',
                    f'train.device="{device}"',
                ],
            )
        )
        return load_file(out / "model.safetensors")

    start = load_file(shards["student"] / "model.safetensors")
    fp32, bf16 = train(tmp_path / "fp32", "cpu", "float32"), train(tmp_path / "bf16", device, "bfloat16")
    assert all(t.dtype == torch.float32 for t in bf16.values())
    step = lambda w: torch.cat([(w[k] - start[k]).flatten() for k in sorted(start)])  # noqa: E731
    fp32_step, bf16_step = step(fp32), step(bf16)
    assert fp32_step.norm() > 0 and bf16_step.norm() == pytest.approx(float(fp32_step.norm()), rel=0.05)
    # AdamW steps every weight by about lr whatever its gradient, so compare the update's direction
    assert torch.nn.functional.cosine_similarity(fp32_step, bf16_step, dim=0) > 0.95  # CPU: 0.997 when written
    assert all(math.isfinite(m["loss"]) for m in read_metrics(tmp_path / "bf16"))


def small_run_sets(models, run_dir, *extra: str) -> list[str]:
    """--set pairs of a small `rladctl run` on the demo recipe with the session's tiny models."""
    return sets(
        *TASK_SETS,
        f"run.dir={run_dir}",
        f"run.student={models['student']}",
        f"run.teacher={models['teacher']}",
        *extra,
        "rollout.num_prompts=4",
        "rollout.group_size=4",
        "rollout.max_new_tokens=8",
        "eval.pass_at=2",
        "eval.num_prompts=4",
        "eval.max_new_tokens=8",
        "train.lr=1e-3",
    )


@pytest.mark.gpu
def test_run_on_a_gpu_with_every_default(models, tmp_path):
    """Two iterations of `rladctl run` on device "auto" (CUDA), dtype "auto" (bf16 sampling and
    scoring, bf16 autocast training): every artifact is written and the losses are finite."""
    done = run_cli(
        "run",
        "recipes/demo.toml",
        "--json",
        *small_run_sets(models, tmp_path / "run", "run.iterations=2"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["iterations"] == 2
    metrics = [
        json.loads(line)
        for line in (tmp_path / "run" / "iter-0001" / "checkpoint" / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics and all(math.isfinite(m["loss"]) for m in metrics)
    for name in ("iter-0001/checkpoint/model.safetensors", "report.md", "eval/step-0002/report.json"):
        assert (tmp_path / "run" / name).exists(), name


@pytest.mark.gpu
def test_models_kept_on_the_gpu_write_what_models_loaded_every_stage_write(models, tmp_path):
    """`run.keep_models` on a GPU (#22): the teacher loaded once, the student and its AdamW state
    handed on by train, a bfloat16 copy of it sampling the next iteration; the Parquet parts equal,
    byte for byte, those of a run that loads every model from disk every stage, and so do the
    final weights (within 1e-6)."""
    from safetensors.torch import load_file

    def run(name: str, keep: str) -> None:
        done = run_cli(
            "run",
            "recipes/demo.toml",
            *small_run_sets(
                models,
                tmp_path / name,
                "run.iterations=3",
                f"run.keep_models={keep}",
                "run.keep_last=0",
                "run.eval_before=false",
            ),
        )
        assert done.returncode == 0, done.stderr

    run("kept", "true")
    run("loaded", "false")
    parts = sorted(p.relative_to(tmp_path / "kept") for p in (tmp_path / "kept").rglob("part-*.parquet"))
    assert parts and parts == sorted(
        p.relative_to(tmp_path / "loaded") for p in (tmp_path / "loaded").rglob("part-*.parquet")
    )
    assert all((tmp_path / "kept" / p).read_bytes() == (tmp_path / "loaded" / p).read_bytes() for p in parts)
    final = "iter-0002/checkpoint/model.safetensors"
    a, b = load_file(tmp_path / "kept" / final), load_file(tmp_path / "loaded" / final)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert (
        json.loads((tmp_path / "kept" / "iter-0000" / "_iteration.json").read_text())["checkpoint"]["optimizer_state"]
        is False
    )
