"""rladctl's user cache: small JSON files that are only ever a shortcut (damaged or missing = recompute)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where rladctl keeps caches: $RLADCTL_CACHE, else $XDG_CACHE_HOME/rladctl, else ~/.cache/rladctl."""
    if os.environ.get("RLADCTL_CACHE"):
        return Path(os.environ["RLADCTL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rladctl"


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
