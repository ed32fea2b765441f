"""Where a model comes from: a local directory or a hub id, and what to do when the hub is out of reach."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from rladctl.errors import MissingPathError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


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
    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return False  # behind a proxy a direct connection says nothing: let the hub client decide
    url = urlparse(hub.ENDPOINT)
    reached: list[bool] = []

    def probe() -> None:  # in a thread: a name lookup has no timeout of its own
        try:
            socket.create_connection(
                (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
            ).close()
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
