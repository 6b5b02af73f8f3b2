"""Issue 12 item 4: the votes of one question go in ONE request with ``n`` when the server accepts it,
in separate requests when it refuses (remembered per client); the scores are the same either way and
each judgement says which was used."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from judge_fixtures import FakeDetector, request, session, turn
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from micebench.judges.backends.vlm import OpenAIChatVLM
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.spec import ScoreStatus

COLORS = ["red", "green", "blue", "black", "white", "pink"]


def answer(prompt: str, vote: int) -> str:
    """Each vote's answer depends only on the question and the vote (= seed): both modes see the same."""
    yes = int(hashlib.sha256(f"{prompt}|{vote}".encode()).hexdigest(), 16) % 3 != 0
    if "FINAL" in prompt:
        return f"Round 1: checked\nFINAL: {'yes' if yes else 'no'}"
    return "Yes." if yes else "No."


class Server:
    """An OpenAI-compatible chat server that accepts ``n``, refuses it (400), or ignores it (one choice)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        body = json.loads(req.get_data())
        with self.lock:
            self.bodies.append(body)
        n = body.get("n", 1)
        if n > 1 and self.mode == "refuse":
            return Response(json.dumps({"error": {"message": "n > 1 is not supported"}}), status=400,
                            content_type="application/json")  # fmt: skip
        prompt = body["messages"][0]["content"][-1]["text"]
        k = n if self.mode == "accept" else 1
        choices = [{"index": i, "message": {"role": "assistant", "content": answer(prompt, body["seed"] + i)},
                    "finish_reason": "stop"} for i in reversed(range(k))]  # fmt: skip  (index order is restored)
        return Response(json.dumps({"choices": choices}), content_type="application/json")


@pytest.fixture
def serve():
    started = []

    def make(mode):
        s = HTTPServer(host="127.0.0.1", threaded=True)
        s.start()
        handler = Server(mode)
        s.expect_request("/v1/chat/completions").respond_with_handler(handler)
        started.append(s)
        return s.url_for("/v1"), handler

    yield make
    for s in started:
        s.clear()
        s.stop()


def run_judge(url, votes=4, turns=COLORS):
    reqs = [request(session([turn("color_alter", f"Change the color of [mug] to [{c}]")], subset="cu",
                            sid=f"s{i}"), 0) for i, c in enumerate(turns)]  # fmt: skip
    cfg = MiceConfig(base_url=url, votes=votes, seed=0, concurrency=4, cache_path="none", max_retries=0,
                     backoff_s=0.0, timeout_s=10)  # fmt: skip
    judge = MiceJudge(cfg, detector=FakeDetector({}))
    rows = judge.score(reqs)
    vlm = judge.vlm
    judge.close()
    return [{j.metric: j for j in row} for row in rows], vlm


def scores(rows):
    return [(r[m].score, r[m].votes) for r in rows for m in ("if", "ga")]


def test_n_accepted_one_request_per_question(serve):
    url, server = serve("accept")
    rows, vlm = run_judge(url)
    assert len(server.bodies) == 2 * len(COLORS)  # IF and GA of each turn: one request each, not 4
    assert all(b["n"] == 4 for b in server.bodies)
    assert vlm.supports_n is True and vlm.stats.requests == 2 * len(COLORS)
    for r in rows:
        for m in ("if", "ga"):
            assert r[m].status == ScoreStatus.ok and len(r[m].votes) == 4
            assert "VLM votes: 4 in one request (n=4)" in r[m].reason


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_n_refused_falls_back_to_one_request_per_vote_with_the_same_scores(serve, mode):
    url, accepting = serve("accept")
    reference, _ = run_judge(url)
    url, server = serve(mode)
    rows, vlm = run_judge(url)
    assert scores(rows) == scores(reference)
    assert vlm.supports_n is False
    with_n = [b for b in server.bodies if b.get("n", 1) > 1]
    alone = [b for b in server.bodies if "n" not in b]
    assert 1 <= len(with_n) <= 4  # only requests already in flight when the first refusal came
    assert len(alone) == 4 * 2 * len(COLORS) - (len(with_n) if mode == "ignore" else 0)
    for r in rows:
        assert "in separate requests" in r["if"].reason and "in separate requests" in r["ga"].reason
    # remembered per client: a second scoring never sends n again
    before = len(server.bodies)
    more = [request(session([turn("color_alter", "Change the color of [cup] to [gold]")], subset="cu", sid="x"), 0)]
    judge = MiceJudge(MiceConfig(base_url=url, votes=4, seed=0, cache_path="none"), detector=FakeDetector({}), vlm=vlm)
    judge.score(more)
    assert all("n" not in b for b in server.bodies[before:]) and len(server.bodies) - before == 8


def test_ask_votes_uses_the_cache_and_asks_only_for_missing_votes(serve, tmp_path):
    from judge_fixtures import solid

    from micebench.judges.backends.vlm import RequestCache

    url, server = serve("accept")
    vlm = OpenAIChatVLM(url, "m", seed=0, cache=RequestCache(tmp_path / "c.sqlite"), max_retries=0)
    img = [solid("src")]
    vlm.ask(img, "Is it red?", temperature=0.6, max_tokens=8, vote=1)  # vote 1 already paid for
    got = vlm.ask_votes(img, "Is it red?", temperature=0.6, max_tokens=8, votes=[0, 1, 2, 3])
    # one request for the three missing votes, seeded with the first of them; choices in index order
    assert got[1].cached and server.bodies[-1]["n"] == 3 and server.bodies[-1]["seed"] == 0
    assert [got[v].text for v in (0, 2, 3)] == [answer("Is it red?", k) for k in range(3)]
    assert [v for v in range(4) if got[v].n == 3] == [0, 2, 3]
    again = vlm.ask_votes(img, "Is it red?", temperature=0.6, max_tokens=8, votes=[0, 1, 2, 3])
    assert all(r.cached for r in again.values()) and len(server.bodies) == 2
    vlm.close()
