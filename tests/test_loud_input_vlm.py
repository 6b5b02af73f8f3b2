"""The VLM client on httpx against real servers on 127.0.0.1: an overall deadline per attempt (a
slow-drip server cannot hold it), no credentials sent to another origin on a redirect, a cheap
reachability check for preflight, and the lazy import of httpx."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from judge_fixtures import solid

from micebench.errors import SetupError
from micebench.judges.backends.vlm import OpenAIChatVLM, VLMError

ANSWER = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes."},
                                  "finish_reason": "stop"}]}).encode()  # fmt: skip


class Recorder(BaseHTTPRequestHandler):
    """Scripted by the server's ``behaviour(handler)``; every request's path and headers are recorded."""

    protocol_version = "HTTP/1.1"

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with self.server.lock:
            self.server.seen.append((self.command, self.path, dict(self.headers), body))
        self.server.behaviour(self)

    do_GET = do_POST = _handle

    def log_message(self, *args):
        pass


def start(behaviour):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.daemon_threads = True
    srv.behaviour, srv.seen, srv.lock = behaviour, [], threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def servers():
    started = []

    def make(behaviour):
        srv, url = start(behaviour)
        started.append(srv)
        return srv, url

    yield make
    for s in started:
        s.shutdown()
        s.server_close()


def reply(h, status=200, body=ANSWER, headers=None):
    h.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def ask(client):
    return client.ask([solid("src")], "Is it red?", temperature=0.0, max_tokens=8)


def drip_body(h):
    """Headers at once, then the body one byte a second (never a 1 s silence)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(ANSWER)))
    h.end_headers()
    h.wfile.flush()
    try:
        for b in ANSWER:
            time.sleep(0.5)
            h.wfile.write(bytes([b]))
            h.wfile.flush()
    except OSError:
        pass


def drip_headers(h):
    """Even the status line and headers arrive one byte at a time."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(ANSWER)}\r\n\r\n".encode()
    try:
        for b in head + ANSWER:
            time.sleep(0.5)
            h.wfile.write(bytes([b]))
            h.wfile.flush()
    except OSError:
        pass
    h.close_connection = True


@pytest.mark.parametrize("behaviour", [drip_body, drip_headers])
def test_slow_drip_server_cannot_outlast_the_deadline(servers, behaviour):
    _, url = servers(behaviour)
    client = OpenAIChatVLM(url + "/v1", "m", timeout_s=1.0, max_retries=0, backoff_s=0.0)
    t0 = time.monotonic()
    with pytest.raises(VLMError, match="timed out"):
        ask(client)
    assert time.monotonic() - t0 < 2.5  # a byte every 0.5 s would otherwise take over 100 s
    client2 = OpenAIChatVLM(url + "/v1", "m", timeout_s=1.0, max_retries=2, backoff_s=0.0)
    t0 = time.monotonic()
    with pytest.raises(VLMError, match="3 attempts"):
        ask(client2)
    assert time.monotonic() - t0 < 6  # three attempts of 1 s each, not three slow drips
    client.close()
    client2.close()


def test_redirect_to_another_origin_never_carries_credentials(servers):
    other, other_url = servers(lambda h: reply(h))
    for status in (302, 307):
        home, home_url = servers(lambda h, s=status: reply(h, s, b"", {"Location": other_url + "/v1/chat/completions"}))
        client = OpenAIChatVLM(home_url + "/v1", "m", api_key="secret-key", max_retries=2, backoff_s=0.0)
        with pytest.raises(VLMError, match=f"HTTP {status} redirect to {other_url}.* not followed"):
            ask(client)
        assert len(home.seen) == 1  # refused at once, not retried
        assert home.seen[0][2].get("Authorization") == "Bearer secret-key"
        with pytest.raises(SetupError, match="redirects"):
            client.check_reachable()
        client.close()
    assert other.seen == []  # the other host heard nothing at all


def test_same_origin_307_is_followed_with_method_and_body(servers):
    def behaviour(h):
        if h.path == "/v1/chat/completions":
            reply(h, 307, b"", {"Location": "/v2/chat/completions"})
        else:
            reply(h)

    srv, url = servers(behaviour)
    client = OpenAIChatVLM(url + "/v1", "m", api_key="k", max_retries=0)
    assert ask(client).text == "Yes."
    (m1, p1, _, b1), (m2, p2, h2, b2) = srv.seen
    assert (m1, p1, m2, p2) == ("POST", "/v1/chat/completions", "POST", "/v2/chat/completions")
    assert b1 == b2 and h2.get("Authorization") == "Bearer k"
    client.close()


def test_check_reachable(servers):
    models = json.dumps({"object": "list", "data": [{"id": "judge-a"}, {"id": "judge-b"}]}).encode()

    def behaviour(h):
        if h.headers.get("Authorization") != "Bearer good":
            reply(h, 401, b'{"error": "bad key"}')
        elif h.path == "/v1/models":
            reply(h, 200, models)
        else:
            reply(h, 404, b"not here")

    srv, url = servers(behaviour)
    assert OpenAIChatVLM(url + "/v1", "judge-b", api_key="good").check_reachable() == ["judge-a", "judge-b"]
    assert srv.seen[-1][:2] == ("GET", "/v1/models")
    with pytest.raises(SetupError, match="serves judge-a, judge-b, not 'judge-c'"):
        OpenAIChatVLM(url + "/v1", "judge-c", api_key="good").check_reachable()
    with pytest.raises(SetupError, match="refused the credentials"):
        OpenAIChatVLM(url + "/v1", "judge-b", api_key="wrong").check_reachable()
    with pytest.raises(SetupError, match="HTTP 404; base_url"):
        OpenAIChatVLM(url, "judge-b", api_key="good").check_reachable()
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(SetupError, match="cannot be reached") as e:
        OpenAIChatVLM(f"http://127.0.0.1:{dead}/v1", "m", max_retries=1).check_reachable()
    assert time.monotonic() - t0 < 5 and "\n" not in str(e.value)


def test_slow_models_endpoint_is_a_setup_error_in_bounded_time(servers):
    _, url = servers(drip_headers)
    t0 = time.monotonic()
    with pytest.raises(SetupError, match="no answer within 1 s"):
        OpenAIChatVLM(url + "/v1", "m", timeout_s=1.0).check_reachable()
    assert time.monotonic() - t0 < 2.5


def test_importing_the_client_does_not_import_httpx():
    code = ("import sys, micebench.judges.backends.vlm, micebench.judges.mice.judge\n"
            "from micebench.judges.backends.vlm import OpenAIChatVLM\n"
            "OpenAIChatVLM('http://127.0.0.1:9/v1', 'm')\n"
            "assert 'httpx' not in sys.modules and 'httpcore' not in sys.modules\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_missing_httpx_is_a_setup_error_with_the_install_hint():
    code = ("import sys\nsys.modules['httpx'] = None  # as if not installed\n"
            "from micebench.errors import SetupError\n"
            "from micebench.judges.backends.vlm import OpenAIChatVLM\n"
            "try:\n    OpenAIChatVLM('http://127.0.0.1:9/v1', 'm').check_reachable()\n"
            "except SetupError as e:\n    assert \"pip install 'micebench[vlm]'\" in str(e), e\n"
            "else:\n    raise AssertionError('no SetupError')\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
