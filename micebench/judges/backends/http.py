"""HTTP for model servers, on httpx: an overall deadline per request and no credentials sent elsewhere.

httpx's timeouts are per operation (connect, each read, each write), so a server that drips one
byte a second never trips a 1 s read timeout. :func:`make_client` builds an ``httpx.Client`` whose
network streams clamp every operation to what is left of the calling thread's deadline
(:func:`deadline`), so a whole request -- connecting, httpx's own connection retries, sending,
waiting, reading headers and body -- ends by its deadline whatever the server does.

Redirects are not followed by httpx: :func:`same_origin` lets a caller follow only those that stay
on the origin it was configured for, so an ``Authorization`` header never reaches another host.

httpx and httpcore are imported only when a client is built.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import Any

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float):
    """Every network operation of this thread inside the block ends within ``seconds`` from now."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    end = getattr(_local, "deadline", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the request's overall deadline passed")
    return left if timeout is None else min(timeout, left)


def _deadline_backend(inner: Any) -> Any:
    """An httpcore network backend whose streams honour the calling thread's :func:`deadline`."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, stream: Any) -> None:
            self._s = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._s.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._s.write(buffer, _left(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._s.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self._s.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._s.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            t = _left(timeout, httpcore.ConnectTimeout)
            return Stream(inner.connect_tcp(host, port, t, local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return Stream(inner.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout), socket_options))

        def sleep(self, seconds: float) -> None:  # httpcore's pause between connection retries
            left = _left(None, httpcore.ConnectTimeout)
            inner.sleep(seconds if left is None else min(seconds, left))

    return Backend()


def require_httpx() -> Any:
    """The httpx module, or a :class:`~micebench.errors.SetupError` saying how to install it."""
    try:
        import httpx
    except ImportError:
        from micebench.errors import SetupError

        raise SetupError("the VLM client needs httpx: pip install 'micebench[vlm]'") from None
    return httpx


def _env_proxy(url: str) -> str | None:
    """The proxy the environment asks for this URL (``http_proxy``, ``https_proxy``, ``no_proxy``)."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def make_client(url: str, *, timeout_s: float, connect_retries: int, max_connections: int) -> Any:
    """An ``httpx.Client`` for requests to ``url``'s server: redirects not followed, per-operation
    timeouts of ``timeout_s`` (the overall one comes from :func:`deadline`), connection failures
    retried ``connect_retries`` times by httpx's transport, environment proxies honoured."""
    httpx = require_httpx()

    transport = httpx.HTTPTransport(
        retries=connect_retries,
        proxy=_env_proxy(url),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = _deadline_backend(pool._network_backend)
    else:  # a future httpx/httpcore moved these: say so rather than silently lose the deadline
        warnings.warn("micebench: cannot install the overall request deadline on this httpx version; "
                      "only per-operation timeouts apply", RuntimeWarning, stacklevel=2)  # fmt: skip
    return httpx.Client(transport=transport, follow_redirects=False, timeout=httpx.Timeout(timeout_s))


def same_origin(a: Any, b: Any) -> bool:
    """Whether two httpx URLs share scheme, host and port (where credentials may go)."""
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)
