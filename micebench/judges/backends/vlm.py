"""Vision-language models: the :class:`VLM` interface, an OpenAI-compatible HTTP client, and a
local transformers Qwen2.5-VL backend.

A VLM answers one prompt about a list of images. ``vote`` numbers independent samples of the same
question (a judge asks the same question ``votes`` times at a temperature above 0): it is part of
the cache key, so the votes of a turn are not collapsed into one answer, and a rerun gets each
vote back from the cache instead of paying for it again.

:class:`OpenAIChatVLM` talks to any ``/v1/chat/completions`` endpoint (vLLM serving
Qwen2.5-VL-32B-Instruct is the reference setup) through httpx (the ``vlm`` extra): images travel
as base64 data URLs, at most ``concurrency`` requests are in flight, and every attempt has an
overall deadline of ``timeout_s`` (see :mod:`micebench.judges.backends.http`). Connection failures
are retried by httpx's transport; 429 / 5xx / timeouts / malformed bodies, which httpx does not
retry, by exponential backoff here, honouring ``Retry-After``. Redirects are followed only to the
same origin (307/308); any other is an error, so credentials never reach another host. When
retries run out it raises :class:`VLMError`; it never invents an answer.

Votes in one request: :meth:`OpenAIChatVLM.ask_votes` asks for several votes with the API's ``n``
(vLLM supports it); a server that refuses ``n`` (HTTP 400/422, or fewer choices than asked) is
remembered per client and asked vote by vote from then on. :class:`VoteGroup` lets the votes of
one question, computed in parallel threads, share that one request.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from micebench.kvstore import SqliteJsonStore


class VLMError(RuntimeError):
    """A VLM call that produced no usable answer; ``raw`` holds whatever came back, ``status`` the
    HTTP status when a server answered with an error."""

    def __init__(self, message: str, raw: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.status = status


@dataclass(frozen=True)
class VLMReply:
    """The model's text, why it stopped ("stop", "length", ...), whether it came from the cache, and
    how many votes the request that produced it carried (``n``; 1 for a request of its own)."""

    text: str
    finish_reason: str = ""
    cached: bool = False
    n: int = 1

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


class VoteGroup:
    """The votes of one question (one turn, one metric), computed in parallel, sharing ONE request.

    The first vote to ask a prompt asks the client for all the group's votes at once
    (:meth:`OpenAIChatVLM.ask_votes`); the other votes wait for that request and take their own
    reply. A vote the batch did not answer (the server refused ``n``, or the client has no
    ``ask_votes``) asks alone, as before. :meth:`note` says which happened, for the judgement.
    """

    def __init__(self, votes: Sequence[int]) -> None:
        self.votes = tuple(votes)
        self._lock = threading.Lock()
        self._pending: dict[tuple, Future] = {}
        self._how: dict[int, str] = {}

    def ask(self, vlm: Any, images: list[Any], prompt: str, *, temperature: float, max_tokens: int,
            vote: int) -> VLMReply:  # fmt: skip
        batch = getattr(vlm, "ask_votes", None)
        got: VLMReply | VLMError | None = None
        if batch is not None and len(self.votes) > 1 and vote in self.votes and getattr(vlm, "supports_n", None) \
                is not False:  # fmt: skip
            key = (prompt, temperature, max_tokens, tuple(id(im) for im in images))
            with self._lock:
                future = self._pending.get(key)
                owner = future is None
                if owner:
                    future = self._pending[key] = Future()
            if owner:
                try:
                    future.set_result(batch(images, prompt, temperature=temperature, max_tokens=max_tokens,
                                            votes=self.votes))  # fmt: skip
                except BaseException as e:  # handed to every vote waiting on this request
                    future.set_exception(e)
            got = future.result().get(vote)
        if got is None:
            got = vlm.ask(images, prompt, temperature=temperature, max_tokens=max_tokens, vote=vote)
        self._record(vote, got)
        if isinstance(got, VLMError):
            raise VLMError(str(got), got.raw, got.status)
        return got

    def _record(self, vote: int, reply: VLMReply | VLMError) -> None:
        if isinstance(reply, VLMError):
            how = "failed"
        else:
            how = "cache" if reply.cached else (f"n={reply.n}" if reply.n > 1 else "alone")
        with self._lock:
            self._how[vote] = how

    def note(self) -> str:
        """How the VLM was asked, e.g. "VLM votes: 4 in one request (n=4)"; "" when it was not asked."""
        with self._lock:
            hows = list(self._how.values())
        if not hows:
            return ""
        parts = []
        for how in sorted(set(hows)):
            k = hows.count(how)
            if how.startswith("n="):
                parts.append(f"{k} in one request ({how})")
            elif how == "alone":
                parts.append(f"{k} in separate requests")
            elif how == "cache":
                parts.append(f"{k} from the cache")
        return "VLM votes: " + ", ".join(parts) if parts else ""


class TransformersQwenVLM:
    """Qwen2.5-VL run locally with transformers (``Qwen2_5_VLForConditionalGeneration``).

    Sampling uses ``torch.manual_seed(seed + vote)`` so each vote is reproducible; calls are
    serialised by a lock.
    """

    def __init__(self, path: str, device: str = "auto", seed: int = 0, max_pixels: int | None = None) -> None:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        from micebench.judges.backends.detector import _resolve_device, model_revision

        self.device = _resolve_device(device)
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        try:
            self.processor = AutoProcessor.from_pretrained(path, **kwargs)
            self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).to(self.device).eval()
        except OSError as e:
            raise OSError(f"cannot load Qwen2.5-VL from {path!r}: {e}") from e
        self.name = str(path)
        self.revision = model_revision(path, self.model)
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


def __getattr__(name: str) -> Any:
    # The HTTP client lives in openai_chat (it imports this module); re-exported here for callers.
    if name in ("OpenAIChatVLM", "ClientStats"):
        from micebench.judges.backends import openai_chat

        return getattr(openai_chat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
