"""What a manifest records about a model: hashes of its config, weights and tokenizer (DESIGN §3)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rladctl.cache import cache_dir, read_cache, write_cache
from rladctl.models.hub import locate
from rladctl.models.tokenizer import (
    load_tokenizer,
)
from rladctl.store.files import read_json, sha256_file


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
    identity.update(
        revision=snapshot.name, config_hash=_config_hash(snapshot), tokenizer_hash=_tokenizer_hash(snapshot)
    )
    return identity


def _config_hash(directory: Path) -> str | None:
    config = read_json(directory / "config.json")
    return None if config is None else _sha256_text(_canonical(config))


def _tokenizer_hash(directory: Path) -> str | None:
    if (directory / "tokenizer.json").is_file():
        return sha256_file(directory / "tokenizer.json")
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
            digests[f.name] = sha256_file(f)
        fresh[f.name] = {**key, "sha256": digests[f.name]}
    if fresh != cache:
        write_cache(cache_file, fresh)
    if len(files) == 1:
        return digests[files[0].name]
    return _sha256_text("".join(f"{digests[name]}  {name}\n" for name in sorted(digests)))


def hash_cache_file(directory: Path) -> Path:
    """The weights-hash cache of one model directory. It lives in the user's cache, never in the
    model directory: an input is never written to (it may be shared, or read-only)."""
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "weights-sha256" / f"{key}.json"


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
