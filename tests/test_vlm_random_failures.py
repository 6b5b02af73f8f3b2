"""The mice judge behind a real HTTP server that fails at random (seeded).

Every request's fate is a pure function of (instruction, vote) so the test knows, independently of
the judge, which votes succeed; then it checks that every score is exactly the mean of the votes
that succeeded, and that unscored counts are exact. No fallback number can hide in there.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from judge_fixtures import FakeDetector, request, session, turn
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.spec import ScoreStatus

OUTCOMES = ["yes", "no", "http500", "http429", "malformed", "garbage", "empty"]
SEED = 1234
COLORS = ["red", "green", "blue", "black", "white", "pink", "gray", "brown", "cyan", "teal", "gold", "navy"]


def fate(prompt: str, vote: int) -> str:
    h = hashlib.sha256(f"{SEED}|{prompt}|{vote}".encode()).hexdigest()
    return random.Random(h).choice(OUTCOMES)


def handler(request: Request) -> Response:
    body = json.loads(request.get_data())
    prompt = body["messages"][0]["content"][-1]["text"]
    outcome = fate(prompt, body["seed"])
    if outcome == "http500":
        return Response("internal error", status=500)
    if outcome == "http429":
        return Response("rate limited", status=429)
    if outcome == "malformed":
        return Response('{"choices": [{"message": {"content": "ye', content_type="application/json")
    text = {"yes": "Yes.", "no": "No, it is not.", "garbage": "I cannot tell", "empty": ""}[outcome]
    msg = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    return Response(json.dumps(msg), content_type="application/json")


@pytest.mark.parametrize("votes", [1, 4])
def test_random_failures_never_become_numbers(votes, tmp_path):
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    try:
        server.expect_request("/v1/chat/completions").respond_with_handler(handler)
        turns = [turn("color_alter", f"Change the color of [mug] to [{c}]") for c in COLORS]
        requests = [request(session([t], subset="cu", sid=f"s{i}"), 0) for i, t in enumerate(turns)]
        cfg = MiceConfig(base_url=server.url_for("/v1"), votes=votes, max_retries=0, backoff_s=0.0, seed=0,
                         concurrency=4, cache_path=str(tmp_path / "cache.sqlite"), timeout_s=5)  # fmt: skip
        judge = MiceJudge(cfg, detector=FakeDetector({}))
        rows = judge.score(requests)
        judge.close()
    finally:
        server.stop()

    expected_unscored = 0
    seen = set()
    for t, row in zip(turns, rows, strict=True):
        jd = {j.metric: j for j in row}["if"]
        prompt = judge.prompts.render("if_color", object="mug", color=t.formatted_instruction.split("[")[2][:-1])
        outcomes = [fate(prompt, v) for v in range(votes)]
        expected_votes = tuple({"yes": 1.0, "no": 0.0}.get(o) for o in outcomes)
        assert jd.votes == expected_votes
        ok = [v for v in expected_votes if v is not None]
        if ok:
            assert jd.status == ScoreStatus.ok and jd.score == sum(ok) / len(ok)
            assert jd.reason.startswith(f"{len(ok)}/{votes} votes succeeded")
        else:
            expected_unscored += 1
            assert jd.status == ScoreStatus.unscored and jd.score is None
            assert jd.reason.startswith(f"0/{votes} votes succeeded")
        seen.update(outcomes)
    actual_unscored = sum(1 for row in rows for j in row if j.metric == "if" and j.status == ScoreStatus.unscored)
    assert actual_unscored == expected_unscored
    assert {"yes", "no"} <= seen and len(seen - {"yes", "no"}) >= 3  # the failure kinds were exercised
    if votes == 1:
        assert 0 < expected_unscored < len(turns)
