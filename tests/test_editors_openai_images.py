"""The openai-images editor against a fake image-edit server on 127.0.0.1: the multipart body,
retries on 429/5xx, no retry on other 4xx, concurrency, usage, and the key never in the run directory."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import threading
import time

import pandas as pd
import pytest
from editor_fixtures import picture, request, same_pixels, suite
from PIL import Image
from werkzeug import Request, Response

from micebench.editors.base import create_editor
from micebench.errors import SetupError

pytest.importorskip("httpx")

KEY = "sk-test-9f3a1c77e2b04d5d-never-stored"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


OUTPUT = picture(42)


class ImageServer:
    """Answers /v1/images/edits from a script of statuses (the last one repeats); records each request."""

    def __init__(self, *statuses: int, delay: float = 0.0, usage: dict | None = None) -> None:
        self.statuses = list(statuses) or [200]
        self.delay = delay
        self.usage = usage
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, req: Request) -> Response:
        with self.lock:
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.seen.append({
                "auth": req.headers.get("Authorization"), "content_type": req.headers.get("Content-Type", ""),
                "form": req.form.to_dict(),
                "files": {k: [Image.open(io.BytesIO(f.read())).convert("RGB") for f in req.files.getlist(k)]
                          for k in req.files},
                "mimetypes": [f.mimetype for k in req.files for f in req.files.getlist(k)],
            })  # fmt: skip
        try:
            time.sleep(self.delay)
            if status == 200:
                body = {"created": 1, "data": [{"b64_json": png_b64(OUTPUT)}]}
                if self.usage:
                    body["usage"] = self.usage
                return Response(json.dumps(body), content_type="application/json")
            headers = {"Retry-After": "0"} if status == 429 else {}
            err = {"error": {"message": f"scripted failure {status}", "type": "invalid_request_error"}}
            return Response(json.dumps(err), status=status, headers=headers, content_type="application/json")
        finally:
            with self.lock:
                self.in_flight -= 1


def editor(server, **opts):
    base = {"base_url": server.url_for("/v1"), "backoff_s": 0.01, "max_retries": 3, "timeout_s": 10}
    return create_editor("openai-images", {**base, **opts})


def test_multipart_body_and_result(server):
    script = ImageServer(usage={"total_tokens": 1234, "input_tokens": 1000, "output_tokens": 234})
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    req = request(1)
    res = editor(server, size="1024x1024", quality="low", fields={"background": "opaque"}).edit([req])[0]
    assert res.error is None and same_pixels(res.image, OUTPUT)
    seen = script.seen[0]
    assert seen["auth"] == f"Bearer {KEY}" and seen["content_type"].startswith("multipart/form-data")
    assert seen["form"] == {"model": "gpt-image-1", "prompt": req.instruction, "n": "1", "size": "1024x1024",
                            "quality": "low", "background": "opaque"}  # fmt: skip
    assert list(seen["files"]) == ["image"] and seen["mimetypes"] == ["image/png"]
    assert same_pixels(seen["files"]["image"][0], req.history_images[-1])  # chain: the previous output
    assert res.extra["usage"]["total_tokens"] == 1234 and res.extra["attempts"] == 1
    assert res.effective_instruction == req.instruction


def test_multi_image_sends_every_image(server):
    script = ImageServer()
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    req = request(2)
    editor(server, context="multi-image").edit([req])
    images = script.seen[0]["files"]["image[]"]
    assert len(images) == 3
    assert all(same_pixels(a, b) for a, b in zip(images, (req.source_image, *req.history_images), strict=True))


def test_429_and_5xx_are_retried(server):
    script = ImageServer(429, 500, 503, 200)
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    ed = editor(server)
    res = ed.edit([request(0)])[0]
    assert res.error is None and res.extra["attempts"] == 4 and ed.requests_made == 4


def test_retries_run_out_into_an_error_row(server):
    script = ImageServer(500)
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    res = editor(server, max_retries=2).edit([request(0)])[0]
    assert res.error is not None and "3 attempts" in res.error and "HTTP 500" in res.error
    assert len(script.seen) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_other_4xx_are_not_retried(server, status):
    script = ImageServer(status, 200)
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    res = editor(server).edit([request(0)])[0]
    assert len(script.seen) == 1
    assert res.error is not None and f"HTTP {status} (not retried)" in res.error
    assert f"scripted failure {status}" in res.error


def test_concurrency_is_limited(server):
    script = ImageServer(delay=0.3)
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    out = editor(server, concurrency=2).edit([request(0, f"s{k}") for k in range(5)])
    assert all(r.error is None for r in out)
    assert script.max_in_flight == 2


def test_missing_key_is_a_setup_error(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(SetupError, match="OPENAI_API_KEY"):
        editor(server).preflight()
    script = ImageServer()
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    assert editor(server, require_key=False).edit([request(0)])[0].error is None
    assert script.seen[0]["auth"] is None


def test_bad_answers_are_error_rows(server):
    not_an_image = base64.b64encode(b"not an image").decode()
    server.expect_request("/v1/images/edits", method="POST").respond_with_json({"data": [{"b64_json": not_an_image}]})
    res = editor(server).edit([request(0)])[0]
    assert res.error is not None and "cannot be read" in res.error
    server.clear()
    server.expect_request("/v1/images/edits", method="POST").respond_with_json({"nothing": True})
    assert "answer without images" in editor(server).edit([request(0)])[0].error


def test_url_answers_are_fetched_without_the_key(server):
    seen = {}

    def image(req: Request) -> Response:
        seen["auth"] = req.headers.get("Authorization")
        buf = io.BytesIO()
        OUTPUT.save(buf, format="PNG")
        return Response(buf.getvalue(), content_type="image/png")

    server.expect_request("/files/out.png").respond_with_handler(image)
    server.expect_request("/v1/images/edits", method="POST").respond_with_json(
        {"data": [{"url": server.url_for("/files/out.png")}]})
    res = editor(server, response_format="url").edit([request(0)])[0]
    assert res.error is None and same_pixels(res.image, OUTPUT) and seen["auth"] is None


def test_key_never_reaches_the_run_directory(server, tmp_path):
    """A whole run, with successes and a rejected request: the key is in no file of the run directory."""
    from micebench.evaluate import start_run
    from micebench.runner import RunSettings

    script = ImageServer(200, 200, 401, 200, usage={"total_tokens": 7})
    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(script)
    data = suite(tmp_path / "suite", n_sessions=2, n_turns=2)
    res = start_run(data, "openai-images", {"base_url": server.url_for("/v1"), "backoff_s": 0.01, "concurrency": 1},
                    [("pixel", {})], out=tmp_path / "runs", run_name="r",
                    settings=RunSettings(batch_size=2, progress=False))  # fmt: skip
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert (df.status == "ok").sum() == 3 and (df.status == "error").sum() == 1
    assert all(s["auth"] == f"Bearer {KEY}" for s in script.seen)  # it was sent ...
    files = [p for p in res.run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "run.sqlite" for p in files)
    for p in files:  # ... and is nowhere on disk
        assert KEY.encode() not in p.read_bytes(), p
    with sqlite3.connect(res.run_dir / "run.sqlite") as db:
        extras = [json.loads(x) for (x,) in db.execute("SELECT extra FROM turns WHERE status='ok'")]
    assert all(e["usage"] == {"total_tokens": 7} for e in extras)
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["editor"]["config"]["api_key_env"] == "OPENAI_API_KEY"


def test_a_server_that_echoes_the_key_does_not_put_it_in_the_error(server):
    def echo(req: Request) -> Response:
        msg = f"bad request with header {req.headers.get('Authorization')}"
        return Response(json.dumps({"error": {"message": msg}}), status=400, content_type="application/json")

    server.expect_request("/v1/images/edits", method="POST").respond_with_handler(echo)
    res = editor(server).edit([request(0)])[0]
    assert res.error is not None and "bad request with header Bearer [API key]" in res.error
    assert KEY not in res.error
