"""The mice judge behind a real HTTP server that fails at random (seeded).

Every response is a pure function of (prompt, vote, attempt number), so the test knows,
independently of the judge, which votes end in an answer and which fail after all retries. It then
checks that every IF and GA score is exactly the mean of the votes that succeeded and that the
unscored counts are exact: no fallback number can hide in there.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter

import pytest
from judge_fixtures import FakeDetector, request, session, turn
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from micebench.judges.mice.ga import build_ga_prompt
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.spec import ScoreStatus

OUTCOMES = ["yes", "no", "http500", "http429", "malformed", "garbage", "empty"]
RETRYABLE = {"http500", "http429", "malformed"}
SEED = 1234
COLORS = ["red", "green", "blue", "black", "white", "pink", "gray", "brown", "cyan", "teal", "gold", "navy"]


def fate(prompt: str, vote: int, attempt: int) -> str:
    h = hashlib.sha256(f"{SEED}|{prompt}|{vote}|{attempt}".encode()).hexdigest()
    return random.Random(h).choice(OUTCOMES)


def expected_vote(prompt: str, vote: int, max_retries: int) -> float | None:
    """What the judge must record for this vote: 1, 0, or None (failed)."""
    for attempt in range(max_retries + 1):
        outcome = fate(prompt, vote, attempt)
        if outcome not in RETRYABLE:
            return {"yes": 1.0, "no": 0.0}.get(outcome)
    return None


class Server:
    def __init__(self):
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        if body.get("n", 1) > 1:  # a server without n: every vote is its own request with its own fate
            return Response('{"error": "n must be 1"}', status=400)
        prompt = body["messages"][0]["content"][-1]["text"]
        with self.lock:
            attempt = self.attempts[prompt, body["seed"]]
            self.attempts[prompt, body["seed"]] += 1
        outcome = fate(prompt, body["seed"], attempt)
        if outcome == "http500":
            return Response("internal error", status=500)
        if outcome == "http429":
            return Response("rate limited", status=429)
        if outcome == "malformed":
            return Response('{"choices": [{"message": {"content": "ye', content_type="application/json")
        ga = "FINAL" in prompt
        text = {"yes": "Round 1: yes\nFINAL: yes" if ga else "Yes.", "no": "Round 1: no\nFINAL: no" if ga else "No.",
                "garbage": "I cannot tell", "empty": ""}[outcome]  # fmt: skip
        msg = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        return Response(json.dumps(msg), content_type="application/json")


@pytest.mark.parametrize("votes,max_retries", [(1, 0), (4, 0), (4, 2)])
def test_random_failures_never_become_numbers(votes, max_retries, tmp_path):
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    try:
        server.expect_request("/v1/chat/completions").respond_with_handler(Server())
        turns = [turn("color_alter", f"Change the color of [mug] to [{c}]") for c in COLORS]
        requests = [request(session([t], subset="cu", sid=f"s{i}"), 0) for i, t in enumerate(turns)]
        cfg = MiceConfig(base_url=server.url_for("/v1"), votes=votes, max_retries=max_retries, backoff_s=0.0,
                         seed=0, concurrency=4, cache_path=str(tmp_path / "cache.sqlite"), timeout_s=5)  # fmt: skip
        judge = MiceJudge(cfg, detector=FakeDetector({}))
        rows = judge.score(requests)
        judge.close()
    finally:
        server.stop()

    expected_unscored = Counter()
    finals = Counter()
    for t, req, row in zip(turns, requests, rows, strict=True):
        color = t.formatted_instruction.split("[")[2][:-1]
        prompts = {"if": judge.prompts.render("if_color", object="mug", color=color),
                   "ga": build_ga_prompt(req.session, 0, "cu", judge.prompts)}  # fmt: skip
        for jd in row:
            if jd.metric == "cc":
                assert jd.status == ScoreStatus.not_applicable
                continue
            expected = tuple(expected_vote(prompts[jd.metric], v, max_retries) for v in range(votes))
            assert jd.votes == expected, jd.metric
            ok = [v for v in expected if v is not None]
            if ok:
                assert jd.status == ScoreStatus.ok and jd.score == sum(ok) / len(ok)
                assert jd.reason.startswith(f"{len(ok)}/{votes} votes succeeded")
            else:
                expected_unscored[jd.metric] += 1
                assert jd.status == ScoreStatus.unscored and jd.score is None
                assert jd.reason.startswith(f"0/{votes} votes succeeded")
            finals.update(v for v in expected)
    actual = Counter(j.metric for row in rows for j in row if j.status == ScoreStatus.unscored)
    assert actual == expected_unscored
    assert finals[1.0] and finals[0.0] and finals[None]  # successes, "no"s and failures all occurred
    if votes == 1:
        assert 0 < expected_unscored["if"] < len(turns)
