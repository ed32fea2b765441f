"""Loading models safely: devices, dtypes, and a check that a directory is complete before it loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rladctl.errors import ConfigError, ModelError, close_matches, first_line
from rladctl.models.hub import hub_fix, locate
from rladctl.store.files import read_json

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip


def resolve_device(device: str = "auto") -> str:
    """ "auto" is cuda when available, else cpu; anything torch.device accepts passes through."""
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
    """ "auto" is bfloat16 on CUDA and float32 elsewhere; names like bf16/fp16/fp32 are accepted."""
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
        raise ModelError(f"cannot load model {source}: {first_line(exc)}",
                         fix=hub_fix(source, "check the path or hub id and that its files are complete")) from exc  # fmt: skip
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # a truncated or corrupt weight file (safetensors' own type)
            raise
        raise ModelError(f"cannot load model {source}: its weights are damaged ({first_line(exc)})",
                         fix="copy or save the model again; a truncated model.safetensors cannot be read") from None  # fmt: skip
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
        raise ModelError(
            f"{directory} is a file, not a model directory", fix="point at the directory that holds config.json"
        )
    config = read_json(directory / "config.json")
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
