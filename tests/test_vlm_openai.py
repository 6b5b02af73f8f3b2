"""OpenAIChatVLM against a real HTTP server on 127.0.0.1 (pytest-httpserver).

The server answers well, fails with 5xx / 429, stalls past the client timeout, returns malformed
or cut-off bodies, and answers with text truncated at the token limit.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from judge_fixtures import solid
from werkzeug import Request, Response

from micebench.judges.backends.vlm import OpenAIChatVLM, RequestCache, VLMError


def completion(text: str, finish: str = "stop") -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": finish}]})  # fmt: skip


def client(server, **kw) -> OpenAIChatVLM:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout_s", 5)
    return OpenAIChatVLM(server.url_for("/v1"), "judge-model", **kw)


def ask(c, vote=0, images=None):
    return c.ask(images or [solid("src"), solid("out1")], "Is it red?", temperature=0.6, max_tokens=16, vote=vote)


class Script:
    """Replies in order from a list of callables/tuples; records every request body."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.bodies.append(json.loads(request.get_data()))
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(reply):
            return reply(request)
        status, body, headers = (reply + ({},))[:3] if len(reply) < 3 else reply
        return Response(body, status=status, headers=headers, content_type="application/json")


def test_good_answer_request_format(server):
    script = Script((200, completion("Yes, it is red.")))
    server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(script)
    reply = ask(client(server, api_key="k123"))
    assert reply.text == "Yes, it is red." and reply.finish_reason == "stop" and not reply.cached
    body = script.bodies[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.6 and body["max_tokens"] == 16
    content = body["messages"][0]["content"]
    assert [c["type"] for c in content] == ["image_url", "image_url", "text"]
    url = content[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert content[2]["text"] == "Is it red?"


def test_retries_5xx_and_429_then_succeeds(server):
    script = Script((500, "boom"), (503, "busy"), (429, "slow down", {"Retry-After": "0.05"}), (200, completion("no")))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    c = client(server)
    t0 = time.monotonic()
    assert ask(c).text == "no"
    assert time.monotonic() - t0 >= 0.05  # honoured Retry-After
    assert len(script.bodies) == 4 and c.stats.retries == 3 and c.stats.failures == 0


def test_gives_up_after_max_retries_with_raw(server):
    server.expect_request("/v1/chat/completions").respond_with_handler(Script((502, "<html>bad gateway</html>")))
    c = client(server, max_retries=2)
    with pytest.raises(VLMError) as e:
        ask(c)
    assert "3 attempts" in str(e.value) and "HTTP 502" in str(e.value) and "bad gateway" in e.value.raw
    assert c.stats.requests == 3 and c.stats.failures == 1


def test_client_error_is_not_retried(server):
    script = Script((400, '{"error": "too many images"}'))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    with pytest.raises(VLMError, match="HTTP 400"):
        ask(client(server))
    assert len(script.bodies) == 1


def test_timeout_is_retried(server):
    def slow(request):
        time.sleep(0.6)
        return Response(completion("yes"), content_type="application/json")

    script = Script(slow, (200, completion("yes, late but fine")))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    c = client(server, timeout_s=0.2)
    assert ask(c).text == "yes, late but fine"
    assert c.stats.retries == 1


def test_malformed_and_cut_off_bodies_are_retried_then_fail(server):
    cut = completion("yes")[:25]  # a body cut mid-JSON
    script = Script((200, "not json at all"), (200, cut), (200, '{"choices": []}'), (200, completion("yes")))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    assert ask(client(server)).text == "yes"
    server.clear()
    server.expect_request("/v1/chat/completions").respond_with_handler(Script((200, cut)))
    with pytest.raises(VLMError, match="malformed") as e:
        ask(client(server, max_retries=1))
    assert e.value.raw == cut


def test_truncated_text_is_returned_as_truncated(server):
    script = Script((200, completion("The text rea", "length")))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    reply = ask(client(server))
    assert reply.truncated and reply.text == "The text rea"


def test_request_cache_per_vote_and_failures_not_cached(server, tmp_path):
    script = Script((500, "x"), (200, completion("yes")), (200, completion("no")))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    cache = RequestCache(tmp_path / "c.sqlite")
    c = client(server, cache=cache, max_retries=0)
    with pytest.raises(VLMError):
        ask(c, vote=0)
    assert len(cache) == 0  # a failure is not stored
    assert ask(c, vote=0).text == "yes"
    assert ask(c, vote=1).text == "no"  # another vote is another request
    n = len(script.bodies)
    c2 = client(server, cache=RequestCache(tmp_path / "c.sqlite"))  # a new process, same file
    r0, r1 = ask(c2, vote=0), ask(c2, vote=1)
    assert (r0.text, r0.cached, r1.text) == ("yes", True, "no")
    assert len(script.bodies) == n  # nothing paid twice
    assert c2.stats.cache_hits == 2


def test_concurrency_limit(server):
    active, peak, lock = [0], [0], threading.Lock()

    def handler(request):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        return Response(completion("yes"), content_type="application/json")

    server.expect_request("/v1/chat/completions").respond_with_handler(handler)
    c = client(server, concurrency=2)
    threads = [threading.Thread(target=ask, args=(c, v)) for v in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.stats.requests == 6
    assert peak[0] == 2 and c.max_in_flight == 2


def test_seed_sent_per_vote(server):
    script = Script((200, completion("yes")))
    server.expect_request("/v1/chat/completions").respond_with_handler(script)
    c = client(server, seed=100)
    ask(c, vote=0)
    ask(c, vote=3)
    assert [b["seed"] for b in script.bodies] == [100, 103]


def test_connection_refused_is_an_error_not_an_answer():
    c = OpenAIChatVLM("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(VLMError, match="connection error"):
        ask(c)
