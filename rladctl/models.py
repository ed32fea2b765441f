"""Models: Qwen3-shaped size presets, deterministic local init, safe loading, identity hashes.

Every model is a plain Hugging Face directory (config.json, model.safetensors, tokenizer files,
generation_config.json) so transformers and vLLM load it unchanged. Nothing here downloads
anything unless the caller names a hub id. torch and transformers are imported inside functions so
that ``PRESETS`` and ``count_params`` answer without them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rladctl.artifacts import writing
from rladctl.errors import ConfigError, MissingPathError, ModelError, close_matches
from rladctl.tokenizer import (  # re-exported: stages import every model helper from here
    _first_line,
    check_same_vocab,
    copy_tokenizer_files,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "PRESETS",
    "check_same_vocab",
    "count_params",
    "init_model",
    "load_model",
    "load_tokenizer",
    "locate",
    "model_identity",
    "resolve_device",
    "resolve_dtype",
    "train_tokenizer",
]

# Qwen3Config kwargs. Tiny presets get vocab_size from their tokenizer; the qwen3-* shapes keep the
# real 151936 rows (padded past the tokenizer) and are only ever built on a GPU, for benchmarks.
_TINY = dict(max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
_QWEN3 = dict(max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6, vocab_size=151936)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-1m": dict(_TINY, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, intermediate_size=384),
    "tiny-4m": dict(_TINY, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, intermediate_size=1024),
    "tiny-10m": dict(_TINY, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                     num_key_value_heads=2, head_dim=64, intermediate_size=1024),
    "tiny-50m": dict(_TINY, hidden_size=512, num_hidden_layers=12, num_attention_heads=8,
                     num_key_value_heads=4, head_dim=64, intermediate_size=2176),
    "qwen3-0.6b": dict(_QWEN3, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, intermediate_size=3072,
                       tie_word_embeddings=True),
    "qwen3-8b": dict(_QWEN3, hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, intermediate_size=12288,
                     tie_word_embeddings=False),
}  # fmt: skip

_HASH_BLOCK = 1 << 20
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip


def preset_config(preset: str) -> dict[str, Any]:
    """A copy of the preset's Qwen3Config kwargs; unknown names list the valid ones."""
    if preset not in PRESETS:
        hint = close_matches(preset, PRESETS) or f"choose one of {', '.join(PRESETS)}"
        raise ConfigError(f"unknown model preset '{preset}'", "in --preset", hint)
    return dict(PRESETS[preset])


def count_params(preset: str, vocab_size: int | None = None) -> int:
    """Parameters of the preset's Qwen3ForCausalLM, computed without building it.

    Per layer: q/o projections 2*H*(n_heads*d), k/v 2*H*(n_kv*d), q_norm + k_norm 2*d,
    SwiGLU MLP 3*H*I, two RMSNorms 2*H. Plus embedding V*H, final norm H, and an lm_head V*H when
    untied. ``vocab_size`` defaults to the preset's own (the qwen3-* shapes have one).
    """
    cfg = preset_config(preset)
    vocab = vocab_size if vocab_size is not None else cfg.get("vocab_size")
    if vocab is None:
        raise ConfigError(f"preset '{preset}' takes its vocabulary from the tokenizer", fix="pass vocab_size")
    h, d, inter = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q_dim, kv_dim = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    attention = 2 * h * q_dim + 2 * h * kv_dim + 2 * d
    layer = attention + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if cfg["tie_word_embeddings"] else 2)
    return cfg["num_hidden_layers"] * layer + embeddings + h


def init_model(
    out_dir: str | Path,
    preset: str,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    texts: list[str] | None = None,
    vocab_size: int = 512,
    seed: int = 0,
    overwrite: bool = False,
    tokenizer_kind: str = "bpe",
) -> Path:
    """Write a random-init model of ``preset`` to ``out_dir``; returns the directory.

    The tokenizer is trained on ``texts`` or reused from ``tokenizer`` (a model directory, hub id
    or tokenizer object; a directory's files are copied byte for byte so teacher and student share
    ONE tokenizer). Same inputs and seed give byte-identical files. The directory is built in a
    temporary sibling and renamed into place, so a crash never leaves a half-written model.
    """
    out_dir = Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    cfg = preset_config(preset)
    if tokenizer is None and not texts:
        raise ConfigError("init_model needs texts to train a tokenizer or a tokenizer to reuse",
                          fix="pass --task (texts) or --tokenizer-from MODEL_DIR")  # fmt: skip
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out_dir):
            tmp.mkdir(parents=True)
            tok = _write_tokenizer(tmp, tokenizer, texts, vocab_size, tokenizer_kind)
            model = _build_model(cfg, tok, seed)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model.save_pretrained(str(tmp), **_safe_serialization_kwargs())
            _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _refuse_existing(out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_file():
        raise ModelError(f"output path {out_dir} is a file", fix="choose a directory path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError(f"output directory {out_dir} already exists and is not empty",
                         fix="pass --overwrite to replace it, or choose another directory")  # fmt: skip


def _write_tokenizer(tmp: Path, source, texts, vocab_size: int, kind: str) -> PreTrainedTokenizerBase:
    """Put the tokenizer files in ``tmp`` and return the tokenizer as loaded back from them."""
    if source is None:
        save_tokenizer(train_tokenizer(list(texts), vocab_size=vocab_size, kind=kind), tmp)
    elif isinstance(source, (str, Path)):
        located = locate(source)
        if isinstance(located, Path):
            load_tokenizer(located)  # refuses a directory without a usable tokenizer
            copy_tokenizer_files(located, tmp)
        else:
            save_tokenizer(load_tokenizer(located), tmp)
    else:
        save_tokenizer(source, tmp)
    return load_tokenizer(tmp)


def _build_model(cfg: dict[str, Any], tok: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if tok.eos_token_id is None:
        raise ModelError("the tokenizer has no eos token", fix="use a tokenizer that defines eos_token")
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos  # Qwen3 convention
    # A qwen3-* shape keeps its padded 151936 rows; a tiny preset gets exactly the tokenizer's ids.
    cfg["vocab_size"] = max(len(tok), cfg.get("vocab_size", 0))
    config = Qwen3Config(**cfg, eos_token_id=eos, pad_token_id=pad, bos_token_id=bos)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return model


def _safe_serialization_kwargs() -> dict[str, Any]:
    """transformers 5 always writes safetensors and has no such flag; 4.x needs it spelled out."""
    import transformers

    return {} if int(transformers.__version__.split(".")[0]) >= 5 else {"safe_serialization": True}


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is set aside first, then deleted."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def shrink_model(src: str | Path, out_dir: str | Path, keep_layers: list[int], overwrite: bool = False) -> Path:
    """A smaller student cut FROM a teacher (Minitron-style depth pruning): keep ``keep_layers``.

    Embeddings, norms, head and the kept decoder layers are copied unchanged, so the student starts
    in the teacher's representation (its mistakes are near-misses the teacher can correct); heal it
    briefly afterwards (``rladctl warmup``). The tokenizer files are copied byte for byte.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from rladctl.tokenizer import copy_tokenizer_files

    src, out_dir = Path(src), Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    teacher = load_model(src, dtype="float32", device="cpu")
    layers = teacher.config.num_hidden_layers
    if not keep_layers or sorted(set(keep_layers)) != sorted(keep_layers) or not all(0 <= i < layers for i in keep_layers):
        raise ConfigError(f"keep_layers {keep_layers} must be distinct layer indices in [0, {layers})", "in --keep-layers", "e.g. --keep-layers 0,3")
    config = AutoConfig.from_pretrained(src)
    config.num_hidden_layers = len(keep_layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep_layers]
    student = AutoModelForCausalLM.from_config(config)
    rename = {f".layers.{old}.": f".layers.{new}." for new, old in enumerate(keep_layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        if ".layers." not in key:
            state[key] = value
            continue
        for old, new in rename.items():
            if old in key:
                state[key.replace(old, new)] = value
    student.load_state_dict(state, strict=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out_dir):
            tmp.mkdir(parents=True)
            copy_tokenizer_files(src, tmp)
            student.generation_config = teacher.generation_config
            student.save_pretrained(str(tmp), **_safe_serialization_kwargs())
            _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def locate(path: str | Path) -> Path | str:
    """An existing local path as a Path, or a plausible hub id ("org/name") as a str.

    A name like "runs/student" whose first component exists locally is a mistyped path, not a hub id.
    """
    local = Path(path).expanduser()
    if local.exists():
        return local
    text = str(path)
    if _HUB_ID.match(text) and ".." not in text and not Path(text.split("/")[0]).exists():
        offline_if_hub_unreachable()
        return text
    raise MissingPathError(f"model path {text} does not exist",
                           fix="check the path, or name a hub model as org/name")  # fmt: skip


@functools.cache
def offline_if_hub_unreachable(timeout: float = 3.0) -> bool:
    """Switch the hub to offline mode when its host cannot be reached in ``timeout`` seconds.

    Unreachable, every hub file request retries for about 50 s before it fails or falls back to the
    local hub cache; offline, a cached model loads at once and a missing one fails at once. Child
    processes (vLLM's workers) inherit it. True when offline, by HF_HUB_OFFLINE or from here.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants as hub

    from rladctl.progress import log

    if hub.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return False  # behind a proxy a direct connection says nothing: let the hub client decide
    url = urlparse(hub.ENDPOINT)
    reached: list[bool] = []

    def probe() -> None:  # in a thread: a name lookup has no timeout of its own
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
            reached.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if reached:
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True  # what huggingface_hub.is_offline_mode() reads, for transformers too
    log(f"[yellow]{url.hostname} cannot be reached: hub models load from the local hub cache only ({hub.HF_HUB_CACHE})")
    return True


def hub_fix(source: Path | str, fix: str) -> str:
    """The fix for a failed load, naming the cache when the hub was out of reach."""
    if isinstance(source, str) and os.environ.get("HF_HUB_OFFLINE") == "1":
        return (f"{source} is not (completely) in the local hub cache and the hub is offline or unreachable: "
                f"download it where there is network (hf download {source}) or pass a local directory")  # fmt: skip
    return fix


def resolve_device(device: str = "auto") -> str:
    """"auto" is cuda when available, else cpu; anything torch.device accepts passes through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"unknown device '{device}'", fix="use auto, cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' asked for but CUDA is not available", fix="use device = 'auto' or 'cpu'")
    return str(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str = "auto") -> torch.dtype:
    """"auto" is bfloat16 on CUDA and float32 elsewhere; names like bf16/fp16/fp32 are accepted."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if resolve_device(device).startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        hint = close_matches(str(dtype), _DTYPES) or "use auto, bfloat16, float16 or float32"
        raise ConfigError(f"unknown dtype '{dtype}'", fix=hint)
    return getattr(torch, _DTYPES[dtype])


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    for_training: bool = False,
) -> PreTrainedModel:
    """Load a causal LM after checking a local directory is complete and safe to load.

    Refuses: a missing path, a directory without weights, pickle-only weights (unless
    ``allow_pickle``), a model_type this transformers does not know, weights that do not fit the
    config (another architecture's checkpoint). Returns the model on ``device`` in eval() mode
    unless ``for_training``. Inside ``resident.keep_models()`` (``rladctl run``), a model kept in
    memory whose directory has not changed since is returned instead of loading it again.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from rladctl import resident

    hf_logging.disable_progress_bar()  # rladctl draws its own progress on stderr
    source = locate(path)
    if isinstance(source, Path):
        check_model_dir(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kept = resident.active()
    if kept is not None and isinstance(source, Path):
        model = kept.get(source, torch_dtype, device, for_training)
        if model is not None:
            return model
    kwargs = {
        _dtype_kwarg(): torch_dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": None if allow_pickle else True,
        # Mismatched shapes are reported in loading_info (and refused below) instead of a
        # RuntimeError after a multi-line load report on stderr.
        "ignore_mismatched_sizes": True,
        "output_loading_info": True,
    }
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would repeat, at length, what the error says
    try:
        try:
            model, info = AutoModelForCausalLM.from_pretrained(str(source), attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError) as exc:
            if "sdpa" not in str(exc).lower():
                raise
            model, info = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)  # no SDPA for this architecture
    except OSError as exc:
        raise ModelError(f"cannot load model {source}: {_first_line(exc)}",
                         fix=hub_fix(source, "check the path or hub id and that its files are complete")) from exc  # fmt: skip
    finally:
        hf_logging.set_verbosity(verbosity)
    _check_weights_fit(source, info)
    model.to(device)
    if for_training:
        return model.train()
    if kept is not None and isinstance(source, Path):
        kept.put(source, torch_dtype, device, model)
    return model.eval()


def _check_weights_fit(source: Path | str, info: dict[str, Any]) -> None:
    """Refuse weights that do not fit the config, e.g. one preset's config.json beside another's
    model.safetensors: transformers would re-initialise the tensors that differ, at random, and go on."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    missing = sorted(info.get("missing_keys") or [])
    if mismatched:
        key, in_weights, in_model = mismatched[0]
        detail = f"{key} is {list(in_weights)} in the weights but {list(in_model)} in the config's architecture"
    elif missing:
        detail = f"{len(missing)} tensors the config's architecture needs are not in the weights, e.g. {missing[0]}"
    else:
        return
    raise ModelError(f"the weights in {source} do not fit its config.json ({detail})",
                     fix="pair config.json with the weights it was saved with, or point at the checkpoint of this architecture")  # fmt: skip


def _dtype_kwarg() -> str:
    """from_pretrained took ``torch_dtype`` before transformers 4.56 and ``dtype`` since."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def check_model_dir(directory: Path, trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
    """Raise ModelError unless ``directory`` holds a config transformers knows and safe weights."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not directory.is_dir():
        raise ModelError(f"{directory} is a file, not a model directory", fix="point at the directory that holds config.json")
    config = _read_json(directory / "config.json")
    if config is None:
        raise ModelError(f"model directory {directory} has no config.json",
                         fix="point at a directory written by init-model or save_pretrained")  # fmt: skip
    model_type = config.get("model_type")
    remote = trust_remote_code and "auto_map" in config
    if model_type not in CONFIG_MAPPING and not remote:
        raise ModelError(f"model type '{model_type}' in {directory / 'config.json'} is unknown to this transformers",
                         fix="upgrade transformers, or set trust_remote_code = true if the model ships its own code")  # fmt: skip
    has_safetensors = any(directory.glob("*.safetensors")) or (directory / "model.safetensors.index.json").is_file()
    has_pickle = any(directory.glob("pytorch_model*.bin"))
    if has_safetensors:
        return
    if has_pickle and not allow_pickle:
        raise ModelError(f"model directory {directory} has only pickle weights (pytorch_model.bin), which can run code when loaded",
                         fix="convert them to safetensors (load them with transformers and save_pretrained); from Python, load_model(..., allow_pickle=True) accepts a model you trust")  # fmt: skip
    if not has_pickle:
        raise ModelError(f"model directory {directory} has no weights (model.safetensors)",
                         fix="rerun the stage that writes it, or point at a complete model directory")  # fmt: skip


def model_identity(path: str | Path) -> dict[str, Any]:
    """What a manifest records about a model: {path, config_hash, weights_hash, tokenizer_hash,
    revision}, each a sha256 hex digest or None.

    config_hash: canonical JSON of config.json (sorted keys, no whitespace).
    weights_hash: one safetensors file -> its sha256 (same as ``sha256sum``); several -> sha256 of
    their ``sha256sum`` lines sorted by name. Cached per directory in the user's cache (see
    ``hash_cache_file``), keyed by each file's (size, mtime_ns, inode).
    tokenizer_hash: sha256 of tokenizer.json, else of the canonical JSON of the id-sorted vocab.
    revision: hub ids only, the resolved commit when the hub cache has it (weights_hash is None).
    """
    source = locate(path)
    if isinstance(source, str):
        return _hub_identity(source)
    return {
        "path": str(source.resolve()),
        "config_hash": _config_hash(source),
        "weights_hash": weights_hash(source),
        "tokenizer_hash": _tokenizer_hash(source),
        "revision": None,
    }


def _hub_identity(repo_id: str) -> dict[str, Any]:
    """Never downloads: reads only what the local hub cache already holds."""
    identity = {"path": repo_id, "config_hash": None, "weights_hash": None, "tokenizer_hash": None, "revision": None}
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, offline, or no huggingface_hub: nothing more is known
        return identity
    identity.update(revision=snapshot.name, config_hash=_config_hash(snapshot), tokenizer_hash=_tokenizer_hash(snapshot))
    return identity


def _config_hash(directory: Path) -> str | None:
    config = _read_json(directory / "config.json")
    return None if config is None else _sha256_text(_canonical(config))


def _tokenizer_hash(directory: Path) -> str | None:
    if (directory / "tokenizer.json").is_file():
        return _sha256_file(directory / "tokenizer.json")
    if not any((directory / name).is_file() for name in ("tokenizer_config.json", "vocab.json", "tokenizer.model")):
        return None
    vocab = load_tokenizer(directory).get_vocab()
    return _sha256_text(_canonical(sorted((i, s) for s, i in vocab.items())))


def weights_hash(directory: str | Path) -> str | None:
    """sha256 of the directory's safetensors files (see ``model_identity``); None when there are none."""
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    cache_file = hash_cache_file(directory)
    cache = read_cache(cache_file) or {}
    digests, fresh = {}, {}
    for f in files:
        stat = f.stat()
        key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
        hit = cache.get(f.name)
        if isinstance(hit, dict) and all(hit.get(k) == v for k, v in key.items()) and hit.get("sha256"):
            digests[f.name] = hit["sha256"]
        else:
            digests[f.name] = _sha256_file(f)
        fresh[f.name] = {**key, "sha256": digests[f.name]}
    if fresh != cache:
        write_cache(cache_file, fresh)
    if len(files) == 1:
        return digests[files[0].name]
    return _sha256_text("".join(f"{digests[name]}  {name}\n" for name in sorted(digests)))


def cache_dir() -> Path:
    """Where rladctl keeps caches: $RLADCTL_CACHE, else $XDG_CACHE_HOME/rladctl, else ~/.cache/rladctl."""
    if os.environ.get("RLADCTL_CACHE"):
        return Path(os.environ["RLADCTL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rladctl"


def hash_cache_file(directory: Path) -> Path:
    """The weights-hash cache of one model directory. It lives in the user's cache, never in the
    model directory: an input is never written to (it may be shared, or read-only)."""
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "weights-sha256" / f"{key}.json"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing; corrupt JSON is a ModelError."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON", fix="restore or rewrite the file") from exc


def read_cache(path: Path) -> Any:
    """A cache file's JSON, or None when it is missing or damaged: a cache is only a cache."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_cache(path: Path, obj: Any) -> None:
    """Write then rename; a read-only cache directory just goes without the cache."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
