"""Finding and loading model weights without waiting on an unreachable Hub, and without random weights.

Two quiet failures this module turns loud:

- **Offline Hub.** A hub id that is not in the local Hugging Face cache, on a machine that cannot
  reach the Hub, used to be retried by every loader (minutes per model). :func:`pretrained_source`
  checks the cache and the Hub's reachability once (one TCP connect, 3 s) and raises
  :class:`SetupError` with the exact download command. A cached id is loaded with
  ``local_files_only=True`` when the Hub is unreachable, so nothing waits on the network.
- **Random weights.** ``from_pretrained`` initialises any parameter missing from a checkpoint at
  random and only logs it. :func:`load_pretrained` refuses that unless the judge was given the
  test-only option ``allow_random_weights=true``; judges run that way say so in ``describe()``
  (``"random_weights": true``) and ``leaderboard publish`` refuses their numbers.

Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from micebench.errors import SetupError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "true", "yes", "on"}
#: Parameters a checkpoint may lack without changing inference (masked-image-modelling tokens).
_IGNORABLE_MISSING = ("mask_token",)
RANDOM_OPTION_HELP = "Tests only: accept (partly) random weights; such judgements are marked and unpublishable."


def is_hub_id(ref: str) -> bool:
    return bool(_HUB_ID.match(ref)) and not Path(ref).expanduser().exists()


def download_command(repo_id: str, filename: str | None = None) -> str:
    """The commands (new and old huggingface_hub CLI) that fetch ``repo_id`` (or one file) into the cache."""
    tail = f" {filename}" if filename else ""
    return f"`hf download {repo_id}{tail}` (older huggingface_hub: `huggingface-cli download {repo_id}{tail}`)"


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


@functools.lru_cache(maxsize=8)
def _probe(host: str, port: int, timeout_s: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached (offline mode set, or no TCP connection to the
    endpoint or the proxy in the environment), or None when it can. One probe per process and target."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)),
                 None)  # fmt: skip
    target = urlparse(proxy if proxy else endpoint)
    if not target.hostname:
        return f"cannot parse the Hub endpoint {endpoint!r}"
    port = target.port or (443 if target.scheme == "https" else 80)
    reason = _probe(target.hostname, port, timeout_s)
    return f"{reason} (Hub endpoint {endpoint})" if reason else None


def in_hub_cache(repo_id: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, filename)
    return isinstance(found, str) and os.path.isfile(found)


def pretrained_source(ref: str, what: str, filename: str = "config.json") -> tuple[str, dict[str, Any]]:
    """``(ref, extra from_pretrained kwargs)`` for a local folder or hub id, or :class:`SetupError`.

    A local path must exist. A hub id is fine when the Hub is reachable (the loader may download it);
    when it is not, the id must be in the local cache and is then read with ``local_files_only``.
    """
    p = Path(ref).expanduser()
    if p.exists():
        return str(p), {}
    if not is_hub_id(ref):
        raise SetupError(f"{what}: {ref!r} is not an existing folder or file (nor a hub id like org/name)")
    reason = hub_unreachable()
    if reason is None:
        return ref, {}
    if in_hub_cache(ref, filename):
        return ref, {"local_files_only": True}
    raise SetupError(
        f"{what}: {ref} is not in the local Hugging Face cache ({_hub_cache()}) and the Hub cannot be reached "
        f"({reason}); download it first with {download_command(ref)}, or pass a local folder"
    )


def missing_weights(info: dict[str, Any]) -> list[str]:
    """Parameters a ``from_pretrained(..., output_loading_info=True)`` load left at their random init."""
    missing = [k for k in info.get("missing_keys") or () if not k.endswith(_IGNORABLE_MISSING)]
    mismatched = [f"{m[0]} (shape)" if isinstance(m, (tuple, list)) else str(m)
                  for m in info.get("mismatched_keys") or ()]  # fmt: skip
    return sorted(missing) + mismatched


def load_pretrained(cls: Any, ref: str, what: str, *, allow_random_weights: bool = False, **kwargs: Any):
    """``(model, random)``: ``cls.from_pretrained`` of a folder or hub id (see :func:`pretrained_source`),
    refusing weights that the checkpoint does not provide unless ``allow_random_weights``."""
    source, extra = pretrained_source(ref, what)
    model, info = cls.from_pretrained(source, output_loading_info=True, **extra, **kwargs)
    missing = missing_weights(info)
    if missing and not allow_random_weights:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise SetupError(
            f"{what}: the checkpoint {ref} lacks {len(missing)} weights of {type(model).__name__} ({shown}), which "
            "would be random; point it at the right checkpoint (allow_random_weights=true is for tests only)"
        )
    return model, bool(missing)


def load_processor(cls: Any, ref: str, what: str, **kwargs: Any):
    source, extra = pretrained_source(ref, what)
    return cls.from_pretrained(source, **extra, **kwargs)


def describe_random_weights(described: dict[str, Any], allowed: bool) -> dict[str, Any]:
    """A judge's ``describe()`` with the random-weights option folded in: absent when off (so judge keys
    of runs made before the option existed do not change), ``"random_weights": true`` when on."""
    config = described.get("config")
    if isinstance(config, dict):
        config.pop("allow_random_weights", None)
        if allowed:
            config["allow_random_weights"] = True
    if allowed:
        described["random_weights"] = True
    return described
