"""The ``mice`` judge's ``protocol=upstream`` path: planning a turn and scoring one vote.

Kept apart from :mod:`micebench.judges.mice.judge`, whose strict path it does not touch. Every vote
here produces a number, as the authors' code does; a vote whose number stands in for a failure is
marked ``substituted`` (named in its reason, and not cached, so a rerun asks again).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from micebench.spec import Judgement, JudgeRequest

if TYPE_CHECKING:
    from micebench.judges.mice.judge import MiceJudge, _Vote

EXCEPTION_SCORE = 0.5  # what the authors' client records when a whole request fails


def _vote(*args, **kw) -> _Vote:
    from micebench.judges.mice.judge import _Vote

    return _Vote(*args, **kw)


def _fixed(judge: MiceJudge, metric: str, score: float, n: int, reason: str) -> dict[str, Any]:
    j = Judgement(metric=metric, score=score, votes=(score,) * n, reason=reason, **judge._meta(metric))
    return {"kind": "fixed", "judgement": j}


def plan_upstream(judge: MiceJudge, req: JudgeRequest, hashes: list[str]) -> dict[str, Any]:
    """What to ask for each metric of one turn; the outcomes upstream fixes without a model are fixed here."""
    from micebench.judges.mice.ga import ga_variant
    from micebench.judges.mice.upstream_ga import build_ga_prompt_upstream
    from micebench.judges.mice.upstream_if import parse_upstream

    c, turn, t = judge.config, req.turn, req.turn_index
    plan: dict[str, Any] = {}
    parsed = parse_upstream(turn.task_type, turn.formatted_instruction)
    if parsed is None:
        why = (f"upstream: formatted instruction {turn.formatted_instruction!r} does not match the {turn.task_type} "
               "pattern (brackets must not be empty) -> 0")  # fmt: skip
        plan["if"] = _fixed(judge, "if", 0.0, c.votes, why)
    else:
        plan["if"] = {"kind": "votes", "n": c.votes, "parsed": parsed, "images": [hashes[t], hashes[t + 1]],
                      "text": f"upstream|{turn.task_type}|{turn.formatted_instruction}"}  # fmt: skip
    if not turn.unchanged_objects or not turn.all_objects:
        which = "unchanged_objects" if not turn.unchanged_objects else "all_objects"
        plan["cc"] = _fixed(judge, "cc", 0.5, 1, f"upstream: empty {which} -> 0.5")
    else:
        text = json.dumps(["upstream", turn.unchanged_objects, turn.all_objects, turn.bg_consistency])
        plan["cc"] = {"kind": "votes", "n": 1, "images": [hashes[0], hashes[t + 1]], "text": text}
    n_images = t + 2
    if n_images > c.ga_max_images:
        why = (f"upstream: {n_images} images exceed the VLM server's limit of {c.ga_max_images}; the refused "
               "request reads as 'no' -> 0")  # fmt: skip
        plan["ga"] = _fixed(judge, "ga", 0.0, c.votes, why)
    else:
        variant = ga_variant(req.session, c.ga_variant)
        prompt = build_ga_prompt_upstream(req.session, t, variant, judge.upstream)
        plan["ga"] = {"kind": "votes", "n": c.votes, "prompt": prompt, "images": hashes[: t + 2],
                      "text": f"upstream|{variant}|{prompt}"}  # fmt: skip
    return plan


def compute_vote_upstream(judge: MiceJudge, req: JudgeRequest, spec: dict[str, Any], metric: str, vote: int) -> _Vote:
    from micebench.judges.mice.upstream_cc import compute_cc_upstream
    from micebench.judges.mice.upstream_ga import read_answer_final
    from micebench.judges.mice.upstream_if import UpstreamContext, jpeg_round_trip, score_if_upstream

    c = judge.config

    def ask(images: list[Any], prompt: str) -> str:
        return judge.vlm.ask(images, prompt, temperature=c.temperature, max_tokens=c.max_tokens, vote=vote).text

    try:
        if metric == "if":
            # client -> server and server -> detector / VLM: two JPEG hops
            prev, out = (jpeg_round_trip(jpeg_round_trip(im)) for im in (req.previous, req.output))
            ctx = UpstreamContext(prev, out, judge.detector, ask, judge.upstream)
            score, reason, raw = score_if_upstream(req.turn.task_type, req.turn.formatted_instruction or "",
                                                   spec["parsed"], ctx)  # fmt: skip
            return _vote(score, reason, raw, substituted="upstream:" in reason)
        if metric == "ga":
            try:
                text, failed = ask([req.source_image, *req.outputs], spec["prompt"]), ""
            except Exception as e:  # upstream: a failed GA call answers "no"
                text, failed = "no", f"upstream: VLM call failed ({e}) -> 'no'; "
            score, why = read_answer_final(text)
            return _vote(score, failed + why, text, substituted=bool(failed))  # a tagless answer is cached
        turn = req.turn
        res = compute_cc_upstream(req.source_image, req.output, turn.unchanged_objects, turn.all_objects,
                                  turn.bg_consistency, judge.detector, judge.features)  # fmt: skip
        return _vote(res.score, res.reason, substituted="upstream:" in res.reason)
    except Exception as e:  # the authors' client records a failed request as 0.5
        return _vote(EXCEPTION_SCORE, f"upstream: {type(e).__name__}: {e} -> {EXCEPTION_SCORE}", substituted=True)


def upstream_reason(votes: list[_Vote]) -> str:
    """The reason of an upstream judgement: how many votes, one example, and every substitution made."""
    n = len(votes)
    subs = [v for v in votes if v.substituted]
    reason = f"upstream: mean of {n} vote(s); " + ("" if n == 1 else "e.g. ") + votes[0].reason
    if subs:
        reason += f"; {len(subs)}/{n} vote(s) substituted a number for a failure"
    return reason
