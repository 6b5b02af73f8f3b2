"""The ``openai-images`` editor: OpenAI-compatible image-edit endpoints (``POST /v1/images/edits``).

    export OPENAI_API_KEY=...            # never written to the run directory or the manifest
    micebench run --suite photos --model openai-images -M model=gpt-image-1

Each turn is one multipart request: the model, the instruction as ``prompt``, and the image(s) as
PNG files (``image``, or ``image[]`` for several with ``context=multi-image``). The base URL and the
key come from environment variables (``base_url_env``, ``api_key_env``: their NAMES are options, the
values are read at run time only); ``base_url`` may also be given as an option, since it is no
secret. At most ``concurrency`` requests are in flight; 429, 5xx, timeouts and broken connections
are retried with exponential backoff (honouring ``Retry-After``), other 4xx answers are not. The
usage the API reports (tokens, cost where a gateway adds it) is stored in the turn's ``extra``.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import Field

from micebench.editors.base import Editor
from micebench.editors.context import ContextOptions, SessionContext, TurnPlan
from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIImagesConfig(ContextOptions):
    """Options of the openai-images editor; None leaves a field out of the request (the API's default)."""

    model: str = Field("gpt-image-1", description="Model name sent with each request.")
    base_url: str | None = Field(None, description="API root ending before /images/edits.")
    base_url_env: str = Field("OPENAI_BASE_URL",
                              description=f"Variable read when no base_url (else {DEFAULT_BASE_URL}).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the variable that holds the key.")
    require_key: bool = Field(True, description="false: send no key when the variable is unset (local servers).")
    size: str | None = Field(None, description="e.g. 1024x1024, 1536x1024, auto.")
    quality: str | None = Field(None, description="e.g. low, medium, high, auto.")
    input_fidelity: str | None = Field(None, description="gpt-image-1: high keeps faces and details closer.")
    response_format: str | None = Field(None, description="b64_json or url (dall-e-2); gpt-image-1 always sends b64.")
    fields: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Other form fields, as is.")
    concurrency: int = Field(4, ge=1, description="Most requests in flight at once.")
    timeout_s: float = Field(300.0, gt=0, description="Per HTTP attempt.")
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(60.0, ge=0)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Failed(Exception):
    """An answer that will not get better by asking again."""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _api_message(resp: Any) -> str:
    """The API's own error message (OpenAI shape: {"error": {"message": ...}}), else the body's start."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    err = data.get("error") if isinstance(data, dict) else None
    msg = err.get("message") if isinstance(err, dict) else err
    return str(msg)[:300] if msg else resp.text[:300]


class OpenAIImagesEditor(Editor):
    """An OpenAI-compatible image-edit API (GPT-Image-1 and gateways that mimic it)."""

    Config = OpenAIImagesConfig
    description: ClassVar[str] = "OpenAI-compatible image-edit API (/v1/images/edits, e.g. gpt-image-1)"
    needs: ClassVar[tuple[str, ...]] = ("extra api", "key in $OPENAI_API_KEY (api_key_env)", "network")

    def __init__(self, config: OpenAIImagesConfig | None = None, *, vlm: Any = None) -> None:
        super().__init__(config)
        self.context = SessionContext(self.config, editor="openai-images", vlm=vlm)
        self._client = None
        self._ready = False
        self._lock = threading.Lock()
        self.requests_made = 0  # HTTP attempts, for tests and the curious

    # -- preparing ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        c = self.config
        return (c.base_url or os.environ.get(c.base_url_env) or DEFAULT_BASE_URL).rstrip("/")

    def _key(self) -> str | None:
        return os.environ.get(self.config.api_key_env) or None

    def preflight(self) -> None:
        """Before any work: httpx installed, a key present (when required), a usable URL, the ic-cot VLM
        reachable. The image API itself is not called: that would cost money."""
        try:
            import httpx  # noqa: F401
        except ImportError as e:
            raise SetupError("openai-images editor: httpx is not installed; pip install 'micebench[api]'") from e
        if self.config.require_key and not self._key():
            raise SetupError(f"openai-images editor: no API key; set the environment variable "
                             f"{self.config.api_key_env} (or -M api_key_env=NAME, "
                             "or -M require_key=false)")  # fmt: skip
        if not self.base_url.startswith(("http://", "https://")):
            raise SetupError(f"openai-images editor: base URL {self.base_url!r} must start with http:// or https://")
        self.context.preflight()
        self._ready = True

    def load(self) -> Any:
        if not self._ready:
            self.preflight()
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.config.timeout_s, follow_redirects=False)
        return self._client

    def describe(self) -> dict[str, Any]:
        out = super().describe()  # the config holds variable NAMES only, never the key
        out.update(endpoint=self.base_url + "/images/edits", **self.context.describe())
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- editing -----------------------------------------------------------------------------
    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        client = self.load()
        plans = self.context.plan(requests)
        workers = max(1, min(self.config.concurrency, len(plans)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="micebench-openai-images") as pool:
            return list(pool.map(lambda p: self._one(client, p), plans))

    def _form(self, plan: TurnPlan) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
        from micebench.images import as_rgb_image, png_bytes

        c = self.config
        data = {"model": c.model, "prompt": plan.instruction, "n": "1"}
        for name in ("size", "quality", "input_fidelity", "response_format"):
            if getattr(c, name) is not None:
                data[name] = str(getattr(c, name))
        data.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in c.fields.items()})
        field = "image" if len(plan.images) == 1 else "image[]"
        files = [(field, (f"image_{k}.png", png_bytes(as_rgb_image(im, "input image")), "image/png"))
                 for k, im in enumerate(plan.images)]  # fmt: skip
        return data, files

    def _one(self, client: Any, plan: TurnPlan) -> EditResult:
        if plan.error is not None:
            return EditResult(error=plan.error, extra=plan.extra)
        start = time.perf_counter()
        data, files = self._form(plan)
        try:
            body, attempts = self._post(client, data, files)
            image = self._image(client, body)
        except _Failed as e:
            return EditResult(error=self._redact(f"openai-images: {e}"), extra=plan.extra,
                              seconds=time.perf_counter() - start)  # fmt: skip
        extra = {**plan.extra, "attempts": attempts}
        if isinstance(body.get("usage"), dict):
            extra["usage"] = body["usage"]
        first = body["data"][0]
        if first.get("revised_prompt"):
            extra["revised_prompt"] = first["revised_prompt"]
        return EditResult(image=image, effective_instruction=plan.instruction, extra=extra,
                          seconds=time.perf_counter() - start)  # fmt: skip

    def _redact(self, text: str) -> str:
        """An error may quote the server, and a server may echo the request: the key never goes to a row."""
        key = self._key()
        return text.replace(key, "[API key]") if key else text

    def _post(self, client: Any, data: dict[str, str], files: list) -> tuple[dict, int]:
        import httpx

        c = self.config
        url = self.base_url + "/images/edits"
        headers = {"Authorization": f"Bearer {self._key()}"} if self._key() else {}
        last: _Retryable | None = None
        for attempt in range(c.max_retries + 1):
            if attempt:
                delay = min(c.max_backoff_s, c.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                if last is not None and last.retry_after is not None:
                    delay = min(c.max_backoff_s, max(delay, last.retry_after))
                time.sleep(delay)
            with self._lock:
                self.requests_made += 1
            try:
                resp = client.post(url, data=data, files=files, headers=headers)
            except httpx.TimeoutException:
                last = _Retryable(f"timed out after {c.timeout_s:g} s")
                continue
            except httpx.TransportError as e:
                last = _Retryable(f"connection error: {type(e).__name__}")
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = _Retryable(f"HTTP {resp.status_code}: {_api_message(resp)}",
                                  _retry_after(resp.headers.get("Retry-After")))  # fmt: skip
                continue
            if resp.status_code != 200:
                raise _Failed(f"HTTP {resp.status_code} (not retried): {_api_message(resp)}")
            try:
                body = resp.json()
                ok = isinstance(body.get("data"), list) and body["data"] and isinstance(body["data"][0], dict)
            except (ValueError, AttributeError):
                ok = False
            if not ok:
                raise _Failed(f"answer without images: {resp.text[:200]!r}")
            return body, attempt + 1
        assert last is not None
        raise _Failed(f"no answer after {c.max_retries + 1} attempts; last: {last}")

    def _image(self, client: Any, body: dict) -> Any:
        from PIL import Image, UnidentifiedImageError

        from micebench.images import as_rgb_image

        first = body["data"][0]
        if first.get("b64_json"):
            try:
                raw = base64.b64decode(first["b64_json"], validate=True)
            except ValueError as e:
                raise _Failed(f"b64_json is not base64: {e}") from e
        elif first.get("url"):
            # A download link (dall-e-2): fetched without the API key, which is for the API host only.
            resp = client.get(first["url"], headers={})
            if resp.status_code != 200:
                raise _Failed(f"image URL answered HTTP {resp.status_code}")
            raw = resp.content
        else:
            raise _Failed("answer has neither b64_json nor url")
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                return as_rgb_image(im, "API image")
        except (UnidentifiedImageError, OSError) as e:
            raise _Failed(f"the returned image cannot be read: {e}") from e
