"""The OpenAI-compatible chat-completions client of :mod:`micebench.judges.backends.vlm` (see there),
on httpx with an overall deadline per attempt and no credentials sent to another origin."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from micebench.judges.backends.vlm import RequestCache, VLMError, VLMReply, _encode, request_key


class _Retryable(Exception):
    def __init__(self, message: str, raw: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.retry_after = retry_after


@dataclass
class ClientStats:
    requests: int = 0  # HTTP attempts made
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0  # calls that raised VLMError
    batched: int = 0  # requests that asked for several votes at once (n > 1)
    n_refused: int = 0  # times the server refused or ignored n


MAX_BODY = 32 * 2**20  # an answer larger than this is not a chat completion
MAX_SAME_ORIGIN_REDIRECTS = 3


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


class OpenAIChatVLM:
    """Client of an OpenAI-compatible chat-completions API (vLLM, SGLang, OpenAI, ...).

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://localhost:8000/v1``). ``seed``,
    when set, is sent as ``seed + vote`` so votes are reproducible on servers that honour it (a
    request for several votes sends the seed of its first vote). ``timeout_s`` is the overall
    deadline of one attempt: connecting, sending, waiting and reading the whole answer.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        concurrency: int = 8,
        cache: RequestCache | None = None,
        seed: int | None = None,
        image_format: str = "png",
    ) -> None:
        if not base_url:
            raise ValueError("OpenAIChatVLM needs a base_url (e.g. http://localhost:8000/v1)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.name = model
        self.revision = ""
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache = cache
        self.seed = seed
        self.image_format = image_format
        self.concurrency = concurrency
        #: Whether the server answers ``n`` votes in one request: None until a request tells.
        self.supports_n: bool | None = None
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stats_lock = threading.Lock()
        self.stats = ClientStats()
        self._in_flight = 0
        self.max_in_flight = 0  # the most requests seen in flight at once (checked by tests)
        self._client = None
        self._client_lock = threading.Lock()

    # ----- plumbing -----------------------------------------------------------------------
    def _count(self, field: str) -> None:
        with self._stats_lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def _http(self):
        with self._client_lock:
            if self._client is None:
                from micebench.judges.backends.http import make_client

                self._client = make_client(self.url, timeout_s=self.timeout_s, connect_retries=self.max_retries,
                                           max_connections=self.concurrency)  # fmt: skip
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _prepare(self, images: list[Any]) -> tuple[list[dict], list[str]]:
        encoded = [_encode(im, self.image_format) for im in images]  # encoded once: hashed and sent
        hashes = [hashlib.sha256(data).hexdigest() for data, _ in encoded]
        content: list[dict] = [
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}}
            for data, mime in encoded
        ]
        return content, hashes

    def _key(self, prompt: str, hashes: list[str], temperature: float, max_tokens: int, vote: int) -> str:
        seed = None if self.seed is None else self.seed + vote
        return request_key(
            self.model, prompt, hashes, temperature=temperature, max_tokens=max_tokens, vote=vote, seed=seed
        )

    def _cached(self, key: str) -> VLMReply | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is None:
            return None
        self._count("cache_hits")
        return VLMReply(text=hit["text"], finish_reason=hit.get("finish_reason", ""), cached=True, n=hit.get("n", 1))

    def _store(self, key: str, reply: VLMReply) -> None:
        if self.cache is not None:
            self.cache.put(key, {"text": reply.text, "finish_reason": reply.finish_reason, "n": reply.n})

    def _payload(self, content: list[dict], prompt: str, temperature: float, max_tokens: int, first_vote: int,
                 n: int) -> dict[str, Any]:  # fmt: skip
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if n > 1:
            payload["n"] = n
        if self.seed is not None:
            payload["seed"] = self.seed + first_vote
        return payload

    # ----- the VLM interface ----------------------------------------------------------------
    def ask(
        self, images: list[Any], prompt: str, *, temperature: float, max_tokens: int, vote: int = 0
    ) -> VLMReply:
        content, hashes = self._prepare(images)
        key = self._key(prompt, hashes, temperature, max_tokens, vote)
        hit = self._cached(key)
        if hit is not None:
            return hit
        [reply] = self._complete(self._payload(content, prompt, temperature, max_tokens, vote, 1), 1)[:1]
        self._store(key, reply)
        return reply

    def ask_votes(
        self, images: list[Any], prompt: str, *, temperature: float, max_tokens: int, votes: Sequence[int]
    ) -> dict[int, VLMReply | VLMError]:
        """The replies of several votes of one prompt, from the cache and ONE request with ``n``.

        Votes absent from the result were not answered here (one vote left, the server refused
        ``n``, which this client then remembers, or a request with ``n`` failed before any had
        worked): ask them one by one with :meth:`ask`. Once ``n`` has worked, a request that fails
        gives the same :class:`VLMError` for each of its votes.
        """
        out: dict[int, VLMReply | VLMError] = {}
        if self.supports_n is False:
            return out
        content, hashes = self._prepare(images)
        keys = {v: self._key(prompt, hashes, temperature, max_tokens, v) for v in votes}
        for v in votes:
            hit = self._cached(keys[v])
            if hit is not None:
                out[v] = hit
        missing = [v for v in votes if v not in out]
        if len(missing) < 2:
            return out
        payload = self._payload(content, prompt, temperature, max_tokens, missing[0], len(missing))
        self._count("batched")
        try:
            replies = self._complete(payload, len(missing))
        except VLMError as e:
            if e.status in (400, 422):  # the server does not take n (or this request at all): ask vote by vote
                self.supports_n = False
                self._count("n_refused")
                return out
            if not self.supports_n:  # n never worked here yet: it may be the cause, so each vote asks alone
                return out
            return {**out, **{v: e for v in missing}}
        if len(replies) < len(missing):  # n ignored: keep what came, ask the rest alone
            self.supports_n = False
            self._count("n_refused")
        else:
            self.supports_n = True
        for v, reply in zip(missing, replies, strict=False):
            self._store(keys[v], reply)
            out[v] = reply
        return out

    def check_reachable(self, timeout_s: float = 10.0) -> list[str]:
        """One cheap ``GET {base_url}/models`` with the same credentials, within ``timeout_s`` (and
        the client's own ``timeout_s``) in all; the served model ids.

        Raises :class:`micebench.errors.SetupError` with a one-line reason when the server cannot be
        reached, redirects, refuses the credentials, is not OpenAI-compatible, or does not serve
        ``model``. Used by the run's preflight, before any editing.
        """
        from micebench.errors import SetupError
        from micebench.judges.backends.http import deadline, require_httpx

        httpx = require_httpx()

        url = self.base_url + "/models"
        limit = min(self.timeout_s, timeout_s)
        try:
            with deadline(limit):
                resp = self._http().get(url, headers=self._headers())
        except httpx.TimeoutException:
            raise SetupError(f"VLM server {url}: no answer within {limit:g} s") from None
        except httpx.HTTPError as e:
            raise SetupError(f"VLM server {self.base_url} cannot be reached ({type(e).__name__}: "
                             f"{_one_line(str(e), 150)}); is it running, and is base_url right?") from None  # fmt: skip
        code = resp.status_code
        if resp.is_redirect:
            raise SetupError(f"VLM server {url} redirects (HTTP {code}) to {resp.headers.get('location', '?')}; "
                             f"set base_url to the final address")  # fmt: skip
        if code in (401, 403):
            raise SetupError(f"VLM server {url} refused the credentials (HTTP {code}); check the API key")
        if code == 404:
            raise SetupError(f"VLM server {url}: HTTP 404; base_url must be the address that /chat/completions and "
                             f"/models hang off, usually ending in /v1")  # fmt: skip
        if code >= 400:
            raise SetupError(f"VLM server {url}: HTTP {code}: {_one_line(resp.text, 200)}")
        try:
            ids = [str(m["id"]) for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise SetupError(f"VLM server {url} did not answer with a model list; is it OpenAI-compatible?") from None
        if ids and self.model not in ids:
            raise SetupError(f"VLM server {self.base_url} serves {', '.join(ids[:5])}, not {self.model!r}; "
                             f"set the judge's model option")  # fmt: skip
        return ids

    # ----- one request, with retries --------------------------------------------------------
    def _complete(self, payload: dict[str, Any], n: int) -> list[VLMReply]:
        body = json.dumps(payload).encode()
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                if last is not None and last.retry_after is not None:
                    delay = min(self.max_backoff_s, max(delay, last.retry_after))
                time.sleep(delay)
            try:
                return _parse_choices(self._post(body), n)
            except _Retryable as e:
                last = e
            except VLMError:
                self._count("failures")
                raise
        self._count("failures")
        assert last is not None
        raise VLMError(f"{self.url}: no answer after {self.max_retries + 1} attempts; last error: {last}", last.raw)

    def _post(self, body: bytes) -> str:
        """The body of one successful POST; :class:`_Retryable` or :class:`VLMError` otherwise."""
        from micebench.judges.backends.http import deadline, require_httpx, same_origin

        client = self._http()
        httpx = require_httpx()
        with self._slots:
            with self._stats_lock:
                self.stats.requests += 1
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                with deadline(self.timeout_s):
                    url = httpx.URL(self.url)
                    for _hop in range(MAX_SAME_ORIGIN_REDIRECTS + 1):
                        with client.stream("POST", url, content=body, headers=self._headers()) as resp:
                            if not resp.is_redirect:
                                return self._answer(resp)
                            target = url.join(resp.headers.get("location", ""))
                            home = same_origin(target, url)
                            if resp.status_code in (307, 308) and home:
                                url = target  # same server, method and body kept: credentials stay home
                                continue
                            why = "only 307/308 keep the request" if home else "credentials never leave the server"
                            raise VLMError(
                                f"{self.url}: HTTP {resp.status_code} redirect to {target} not followed ({why}); "
                                f"set base_url to the final address",
                                status=resp.status_code,
                            )  # fmt: skip
                    raise VLMError(f"{self.url}: more than {MAX_SAME_ORIGIN_REDIRECTS} redirects")
            except httpx.TimeoutException as e:
                raise _Retryable(f"timed out: no complete answer within {self.timeout_s:g} s") from e
            except httpx.ConnectError as e:  # httpx's transport already retried it max_retries times
                raise VLMError(f"{self.url}: connection error: {e}") from e
            except httpx.TransportError as e:
                raise _Retryable(f"broken response: {type(e).__name__}: {e}") from e
            finally:
                with self._stats_lock:
                    self._in_flight -= 1

    def _answer(self, resp) -> str:
        code = resp.status_code
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY:
                raise VLMError(f"{self.url}: answer larger than {MAX_BODY // 2**20} MiB (HTTP {code})", status=code)
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        if code == 429 or code >= 500:
            raise _Retryable(f"HTTP {code}", text[:2000], _retry_after(resp.headers.get("retry-after")))
        if code >= 300:
            raise VLMError(f"{self.url}: HTTP {code} (not retried): {text[:300]}", text[:2000], status=code)
        return text


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _parse_choices(raw: str, n: int) -> list[VLMReply]:
    """The choices' texts of a chat-completions body, in ``index`` order; a malformed body is retryable."""
    try:
        data = json.loads(raw)
        choices = sorted(data["choices"], key=lambda c: int(c.get("index", 0)))
        if not choices:
            raise IndexError("no choices")
        texts = [(c["message"]["content"], str(c.get("finish_reason") or "")) for c in choices]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise _Retryable(f"malformed completion body ({type(e).__name__})", raw[:2000]) from e
    if not all(isinstance(t, str) for t, _ in texts):
        raise _Retryable("completion has no text content", raw[:2000])
    got = len(texts[:n])
    return [VLMReply(text=t, finish_reason=f, n=got) for t, f in texts[:n]]
