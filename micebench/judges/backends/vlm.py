"""Vision-language models: the :class:`VLM` interface, an OpenAI-compatible HTTP client, and a
local transformers Qwen2.5-VL backend.

A VLM answers one prompt about a list of images. ``vote`` numbers independent samples of the same
question (a judge asks the same question ``votes`` times at a temperature above 0): it is part of
the cache key, so the votes of a turn are not collapsed into one answer, and a rerun gets each
vote back from the cache instead of paying for it again.

:class:`OpenAIChatVLM` talks to any ``/v1/chat/completions`` endpoint (vLLM serving
Qwen2.5-VL-32B-Instruct is the reference setup): images travel as base64 data URLs, at most
``concurrency`` requests are in flight, and 429 / 5xx / timeouts / connection errors / malformed
bodies are retried with exponential backoff. When retries run out it raises :class:`VLMError`;
it never invents an answer.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from micebench.kvstore import SqliteJsonStore


class VLMError(RuntimeError):
    """A VLM call that produced no usable answer; ``raw`` holds whatever came back."""

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class VLMReply:
    """The model's text, why it stopped ("stop", "length", ...), and whether it came from the cache."""

    text: str
    finish_reason: str = ""
    cached: bool = False

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@runtime_checkable
class VLM(Protocol):
    name: str
    revision: str

    def ask(
        self, images: list[Any], prompt: str, *, temperature: float, max_tokens: int, vote: int = 0
    ) -> VLMReply:
        """Answer ``prompt`` about ``images`` (in order); raise :class:`VLMError` on failure."""
        ...


class RequestCache(SqliteJsonStore):
    """A SQLite key -> JSON store of successful VLM replies, shared safely by threads.

    Failures are never stored, so a rerun retries exactly what failed.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "replies")


def _encode(image: Any, fmt: str) -> tuple[bytes, str]:
    from micebench.images import as_rgb_image, png_bytes

    img = as_rgb_image(image, "VLM input")
    if fmt == "png":
        return png_bytes(img), "image/png"
    if fmt == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), "image/jpeg"
    raise ValueError(f"image format {fmt!r}: expected png or jpeg")


def image_data_url(image: Any, fmt: str = "png") -> str:
    """A ``data:`` URL of the image (PNG by default: lossless and deterministic)."""
    data, mime = _encode(image, fmt)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def request_key(model: str, prompt: str, image_hashes: list[str], **params: Any) -> str:
    """Cache key of one request: model, prompt, image content hashes and sampling parameters."""
    blob = json.dumps({"model": model, "prompt": prompt, "images": image_hashes, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


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


class OpenAIChatVLM:
    """Client of an OpenAI-compatible chat-completions API (vLLM, SGLang, OpenAI, ...).

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://localhost:8000/v1``). ``seed``,
    when set, is sent as ``seed + vote`` so votes are reproducible on servers that honour it.
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
        self.url = base_url.rstrip("/") + "/chat/completions"
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
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stats_lock = threading.Lock()
        self.stats = ClientStats()
        self._in_flight = 0
        self.max_in_flight = 0  # the most requests seen in flight at once (checked by tests)

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """One cheap ``GET {base_url}/models`` (no retries): raises :class:`SetupError` when the server
        cannot be reached, refuses the key, or does not serve ``model``. Used before any editing."""
        from micebench.errors import SetupError

        url = self.url[: -len("/chat/completions")] + "/models"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as resp:
                raw = resp.read(1 << 20).decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            hint = {401: " (check the API key)", 403: " (check the API key)", 404: " (does base_url end with /v1?)"}
            raise SetupError(f"VLM server {url}: HTTP {e.code} {e.reason}{hint.get(e.code, '')}") from e
        except (urllib.error.URLError, TimeoutError, http.client.HTTPException, OSError) as e:
            why = getattr(e, "reason", None) or e
            raise SetupError(f"VLM server {url} cannot be reached ({why}); start it or set base_url") from e
        try:
            served = [m["id"] for m in json.loads(raw)["data"]]
        except (ValueError, KeyError, TypeError) as e:
            raise SetupError(f"VLM server {url}: not an OpenAI-compatible model list: {raw[:200]!r}") from e
        if self.model not in served:
            listed = ", ".join(map(str, served)) or "none"
            raise SetupError(f"VLM server {url} does not serve {self.model!r} (it serves: {listed}); "
                             "set -J model=... to one of them")  # fmt: skip

    def _count(self, field: str) -> None:
        with self._stats_lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def ask(
        self, images: list[Any], prompt: str, *, temperature: float, max_tokens: int, vote: int = 0
    ) -> VLMReply:
        encoded = [_encode(im, self.image_format) for im in images]  # encoded once: hashed and sent
        hashes = [hashlib.sha256(data).hexdigest() for data, _ in encoded]
        seed = None if self.seed is None else self.seed + vote
        key = request_key(
            self.model, prompt, hashes, temperature=temperature, max_tokens=max_tokens, vote=vote, seed=seed
        )
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                return VLMReply(text=hit["text"], finish_reason=hit.get("finish_reason", ""), cached=True)
        content: list[dict] = [
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}}
            for data, mime in encoded
        ]
        content.append({"type": "text", "text": prompt})
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            payload["seed"] = seed
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
                reply = self._post(body)
            except _Retryable as e:
                last = e
                continue
            if self.cache is not None:
                self.cache.put(key, {"text": reply.text, "finish_reason": reply.finish_reason})
            return reply
        self._count("failures")
        assert last is not None
        raise VLMError(f"{self.url}: no answer after {self.max_retries + 1} attempts; last error: {last}", last.raw)

    def _post(self, body: bytes) -> VLMReply:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._slots:
            with self._stats_lock:
                self.stats.requests += 1
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read().decode("utf-8", errors="replace")
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", errors="replace")[:2000] if e.fp else ""
                if e.code == 429 or e.code >= 500:
                    retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
                    raise _Retryable(f"HTTP {e.code}", text, retry_after) from e
                raise VLMError(f"{self.url}: HTTP {e.code} (not retried): {text[:300]}", text) from e
            except TimeoutError as e:
                raise _Retryable(f"timed out after {self.timeout_s}s") from e
            except urllib.error.URLError as e:
                raise _Retryable(f"connection error: {e.reason}") from e
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                raise _Retryable(f"broken response: {type(e).__name__}: {e}") from e
            finally:
                with self._stats_lock:
                    self._in_flight -= 1
        return _parse_completion(raw)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _parse_completion(raw: str) -> VLMReply:
    """The first choice's text of a chat-completions body; a malformed body is retryable."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
        raise _Retryable(f"malformed completion body ({type(e).__name__})", raw[:2000]) from e
    if not isinstance(text, str):
        raise _Retryable("completion has no text content", raw[:2000])
    return VLMReply(text=text, finish_reason=str(choice.get("finish_reason") or ""))


class TransformersQwenVLM:
    """Qwen2.5-VL run locally with transformers (``Qwen2_5_VLForConditionalGeneration``).

    Sampling uses ``torch.manual_seed(seed + vote)`` so each vote is reproducible; calls are
    serialised by a lock.
    """

    def __init__(self, path: str, device: str = "auto", seed: int = 0, max_pixels: int | None = None,
                 allow_random_weights: bool = False) -> None:  # fmt: skip
        from micebench.judges.backends.detector import _resolve_device, model_revision, transformers_classes
        from micebench.weights import load_pretrained, load_processor

        what = "Qwen2.5-VL"
        AutoProcessor, QwenVL = transformers_classes(what, "AutoProcessor", "Qwen2_5_VLForConditionalGeneration")
        self.device = _resolve_device(device)
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        try:
            self.processor = load_processor(AutoProcessor, path, what, **kwargs)
            model, partly_random = load_pretrained(QwenVL, path, what, allow_random_weights=allow_random_weights)
            self.model = model.to(self.device).eval()
        except OSError as e:
            raise OSError(f"cannot load Qwen2.5-VL from {path!r}: {e}") from e
        self.name = str(path)
        self.revision = ("random-weights+" if partly_random else "") + model_revision(path, self.model)
        self.seed = seed
        self._lock = threading.Lock()

    def ask(
        self, images: list[Any], prompt: str, *, temperature: float, max_tokens: int, vote: int = 0
    ) -> VLMReply:
        import torch

        from micebench.images import as_rgb_image

        imgs = [as_rgb_image(im, "VLM input") for im in images]
        content: list[dict] = [{"type": "image"} for _ in imgs] + [{"type": "text", "text": prompt}]
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        with self._lock, torch.no_grad():
            inputs = self.processor(text=[text], images=imgs or None, return_tensors="pt").to(self.device)
            torch.manual_seed(self.seed + vote)
            sample = temperature > 0
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=None,
                top_k=None,
            )
        new = out[0, inputs["input_ids"].shape[1] :]
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        stopped = len(new) > 0 and int(new[-1]) in eos_ids
        finish = "stop" if stopped or len(new) < max_tokens else "length"
        return VLMReply(text=self.processor.decode(new, skip_special_tokens=True), finish_reason=finish)
