"""The ``mice`` judge: MICE-Bench IF, CC and GA (PROTOCOL.md sections 2-4, deviations of section 6).

Two protocols. ``strict`` (the default, the honest variant): a turn the judge could not score is
``unscored`` with the reason, never a number. ``upstream``: every rule of the Edit-R2 authors' code,
failures turned into their numbers included (0.5 for an empty ``unchanged_objects``, "no" for a
failed VLM call, ...), with the authors' prompts read from their checkout (``upstream_repo``); every
substituted number says so in its reason. Judgements and ``describe()`` carry the protocol.

Select a profile with ``--judge mice -J profile=judges/qwen25vl-32b-vllm.yaml``; explicit options
win over the profile's values. Every vote is stored in ``Judgement.votes`` (``None`` for a vote that
failed); the score is the mean of the votes that succeeded and ``reason`` says how many did. When
every vote fails the turn is unscored, with the reasons and the raw answers. Votes are cached on
disk (see :mod:`micebench.judges.mice.cache`), VLM replies too (``RequestCache``).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from micebench.judges.base import Judge, JudgeConfig
from micebench.judges.mice.config import _OPERATIONAL, MiceConfig, _upstream_texts, resolve_profile
from micebench.options import OptionsError
from micebench.spec import Judgement, JudgeRequest, MetricSpec

__all__ = ["MiceConfig", "MiceJudge", "resolve_profile"]


def _fixed(judgement: Judgement) -> dict[str, Any]:
    return {"kind": "fixed", "judgement": judgement}


@dataclass
class _Vote:
    score: float | None
    reason: str
    raw: str = ""
    substituted: bool = False  # protocol=upstream: a failure turned into a number (never cached)


class MiceJudge(Judge):
    """IF / CC / GA as MICE-Bench defines them, on a detector, a feature model and a VLM.

    Backends are built on first use from the config; tests and embedders may pass their own
    (``detector=``, ``features=``, ``vlm=``: anything with the backend interfaces).
    """

    Config: ClassVar[type[JudgeConfig]] = MiceConfig
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec(name="if", role="if", range=(0.0, 1.0), description="MICE instruction following: mean of the votes"),
        MetricSpec(name="cc", role="cc", range=(0.0, 1.0),
                   description="MICE content consistency: DINO similarity of unchanged objects and background"),
        MetricSpec(name="ga", role="ga", range=(0.0, 1.0), description="MICE global awareness: mean of the votes"),
    )
    name: ClassVar[str] = "mice"
    version: ClassVar[str] = "1"

    def __init__(self, config: MiceConfig | None = None, *, detector=None, features=None, vlm=None) -> None:
        super().__init__(config)
        if self.upstream_protocol:
            self.upstream = _upstream_texts(self.config.upstream_repo)
            self.prompts = None
        else:
            from micebench.judges.mice.prompts import load_prompts

            self.upstream = None
            self.prompts = load_prompts(self.config.prompts_dir)
        self._detector, self._features, self._vlm = detector, features, vlm
        self._vote_cache = None
        self._request_cache = None

    # ----- identity -------------------------------------------------------------------------
    @property
    def upstream_protocol(self) -> bool:
        return self.config.protocol == "upstream"

    @property
    def prompt_hash(self) -> str:
        return self.upstream.hash if self.upstream is not None else self.prompts.hash

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["prompt_hash"] = self.prompt_hash
        d["protocol"] = self.config.protocol
        if self.upstream is not None:
            from micebench.upstream import EDIT_R2_COMMIT

            d["upstream_commit"] = EDIT_R2_COMMIT
        return d

    @property
    def profile_id(self) -> str:
        scoring = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in _OPERATIONAL}
        blob = json.dumps({"v": self.version, **scoring}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ----- backends -------------------------------------------------------------------------
    def _cache_file(self) -> Path | None:
        p = self.config.cache_path
        if p and p.lower() == "none":
            return None
        return Path(p) if p else Path.home() / ".cache" / "micebench" / "mice.sqlite"

    @property
    def vote_cache(self):
        if self._vote_cache is None and self._cache_file() is not None:
            from micebench.judges.mice.cache import VoteCache

            self._vote_cache = VoteCache(self._cache_file())
        return self._vote_cache

    @property
    def detector(self):
        """The detector, wrapped in a :class:`CachedDetector` (the votes of a turn share detections)."""
        from micebench.judges.backends.detector import CachedDetector, GroundingDinoDetector

        if self._detector is None:
            self._detector = GroundingDinoDetector(self.config.detector_path, self.config.device)
        if not isinstance(self._detector, CachedDetector):
            self._detector = CachedDetector(self._detector)
        return self._detector

    @property
    def features(self):
        if self._features is None:
            from micebench.judges.backends.features import Dinov3Features, TimmDinov3Features

            backend = TimmDinov3Features if self.config.features_backend == "timm" else Dinov3Features
            self._features = backend(self.config.features_path, self.config.device)
        return self._features

    @property
    def vlm(self):
        if self._vlm is None:
            c = self.config
            if c.vlm_backend == "transformers":
                from micebench.judges.backends.vlm import TransformersQwenVLM

                if not c.vlm_path:
                    raise OptionsError("mice judge: vlm_backend=transformers needs vlm_path (a local Qwen2.5-VL dir)")
                self._vlm = TransformersQwenVLM(c.vlm_path, c.device, seed=c.seed or 0)
            else:
                from micebench.judges.backends.vlm import OpenAIChatVLM, RequestCache

                base = c.base_url or os.environ.get(c.base_url_env, "")
                if not base:
                    raise OptionsError(
                        f"mice judge: no VLM endpoint; set base_url=... or the environment variable {c.base_url_env}"
                    )
                cache_file = self._cache_file()
                if cache_file is not None and self._request_cache is None:
                    self._request_cache = RequestCache(cache_file)
                self._vlm = OpenAIChatVLM(
                    base, c.model, api_key=os.environ.get(c.api_key_env) or None, timeout_s=c.timeout_s,
                    max_retries=c.max_retries, backoff_s=c.backoff_s, concurrency=c.concurrency,
                    cache=self._request_cache, seed=c.seed,
                )  # fmt: skip
        return self._vlm

    # ----- scoring --------------------------------------------------------------------------
    def score(self, requests: list[JudgeRequest]) -> list[list[Judgement]]:
        from micebench.images import image_hash

        plans: list[dict[str, Any]] = []
        for req in requests:
            src_hash = req.source_hash or image_hash(req.source_image)
            out_hashes = list(req.output_hashes) or [image_hash(o) for o in req.outputs]
            plans.append(self._plan(req, src_hash, out_hashes))
        from micebench.judges.mice.if_rules import USES_VLM

        needs_vlm = any(p["ga"]["kind"] == "votes" for p in plans) or any(
            p["if"]["kind"] == "votes" and r.turn.task_type in USES_VLM for p, r in zip(plans, requests, strict=True)
        )
        needs_det = any(p[m]["kind"] == "votes" for p in plans for m in ("if", "cc"))
        # Build backends up front: a misconfigured judge fails loudly, not turn by turn.
        if needs_det:
            _ = self.detector
        if needs_vlm:
            _ = self.vlm
        if any(p["cc"]["kind"] == "votes" for p in plans):
            _ = self.features
        tasks = [
            (i, m, v)
            for i, p in enumerate(plans)
            for m in self.metric_names
            if p[m]["kind"] == "votes"
            for v in range(p[m]["n"])
        ]
        from micebench.judges.backends.vlm import VoteGroup

        # The votes of one question share one VLM request (n votes) when the server allows it.
        groups = {(i, m): VoteGroup(range(plans[i][m]["n"])) for i, m, _v in tasks if plans[i][m]["n"] > 1}
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            done = list(pool.map(lambda t: self._run_vote(requests[t[0]], plans[t[0]], t[1], t[2],
                                                          groups.get((t[0], t[1]))), tasks))  # fmt: skip
        votes: dict[tuple[int, str], list[_Vote]] = {}
        for (i, m, _v), res in zip(tasks, done, strict=True):
            votes.setdefault((i, m), []).append(res)
        out: list[list[Judgement]] = []
        for i, p in enumerate(plans):
            row = []
            for m in self.metric_names:
                if p[m]["kind"] == "votes":
                    j = self._aggregate(m, votes[i, m])
                    note = groups[i, m].note() if (i, m) in groups else ""
                    row.append(j.model_copy(update={"reason": f"{j.reason}; {note}"}) if note else j)
                else:
                    row.append(p[m]["judgement"])
            out.append(row)
        return out

    def _meta(self, metric: str) -> dict[str, str]:
        """judge / model / revision / prompt_hash of a judgement: the backends' own names once built."""
        c = self.config
        configured = {
            "_vlm": c.vlm_path if c.vlm_backend == "transformers" else c.model,
            "_detector": c.detector_path,
            "_features": c.features_path,
        }
        names, revs = [], []
        for attr in {"if": ("_vlm", "_detector"), "cc": ("_detector", "_features"), "ga": ("_vlm",)}[metric]:
            backend = getattr(self, attr)
            names.append(str(getattr(backend, "name", "") or configured[attr]) if backend else str(configured[attr]))
            rev = getattr(backend, "revision", "") if backend is not None else ""
            if rev:
                revs.append(rev)
        model, revision = " + ".join(names), " + ".join(revs)
        return {"judge": "mice", "model": model, "revision": revision, "prompt_hash": self.prompt_hash,
                "protocol": self.config.protocol}  # fmt: skip

    def _plan(self, req: JudgeRequest, src_hash: str, out_hashes: list[str]) -> dict[str, Any]:
        from micebench.judges.mice.ga import build_ga_prompt, ga_variant
        from micebench.judges.mice.grammar import GrammarError, parse_instruction
        from micebench.judges.mice.if_rules import InvalidItem, check_item

        turn, t = req.turn, req.turn_index
        hashes = [src_hash, *out_hashes]
        if self.upstream is not None:
            from micebench.judges.mice.upstream_judge import plan_upstream

            return plan_upstream(self, req, hashes)
        plan: dict[str, Any] = {}
        try:
            parsed = parse_instruction(turn.task_type, turn.formatted_instruction)
            check_item(parsed)
            prev_hash = hashes[t]  # source at turn 1, else output t-1
            plan["if"] = {
                "kind": "votes", "n": self.config.votes, "parsed": parsed,
                "images": [prev_hash, out_hashes[t]], "text": f"{turn.task_type}|{turn.formatted_instruction}",
            }  # fmt: skip
        except GrammarError as e:
            plan["if"] = _fixed(Judgement.unscored("if", f"bad instruction: {e}", **self._meta("if")))
        except InvalidItem as e:
            plan["if"] = _fixed(Judgement.not_applicable("if", str(e), **self._meta("if")))
        if not turn.unchanged_objects:
            reason = "no unchanged_objects listed for this turn"
            plan["cc"] = _fixed(Judgement.not_applicable("cc", reason, **self._meta("cc")))
        else:
            text = json.dumps([turn.unchanged_objects, turn.all_objects, turn.bg_consistency, self.config.patch_tokens])
            plan["cc"] = {"kind": "votes", "n": 1, "images": [src_hash, out_hashes[t]], "text": text}
        n_images = t + 2
        if n_images > self.config.ga_max_images:
            reason = f"GA needs {n_images} images; the judge accepts at most ga_max_images={self.config.ga_max_images}"
            plan["ga"] = _fixed(Judgement.unscored("ga", reason, **self._meta("ga")))
        else:
            variant = ga_variant(req.session, self.config.ga_variant)
            try:
                prompt = build_ga_prompt(req.session, t, variant, self.prompts)
                plan["ga"] = {"kind": "votes", "n": self.config.votes, "prompt": prompt, "images": hashes[: t + 2],
                              "text": f"{variant}|{prompt}"}  # fmt: skip
            except ValueError as e:
                plan["ga"] = _fixed(Judgement.unscored("ga", str(e), **self._meta("ga")))
        return plan

    def _run_vote(self, req: JudgeRequest, plan: dict[str, Any], metric: str, vote: int, group=None) -> _Vote:
        from micebench.judges.mice.cache import vote_key

        spec = plan[metric]
        cache = self.vote_cache
        key = vote_key(self.profile_id, metric, self.prompt_hash, spec["images"], spec["text"], vote)
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return _Vote(hit["score"], hit["reason"], hit["raw"])
        if self.upstream is not None:
            from micebench.judges.mice.upstream_judge import compute_vote_upstream

            result = compute_vote_upstream(self, req, spec, metric, vote)
        else:
            result = self._compute_vote(req, spec, metric, vote, group)
        if cache is not None and result.score is not None and not result.substituted:
            cache.put(key, result.score, result.reason, result.raw)
        return result

    def _ask(self, vote: int, group=None):
        from micebench.judges.backends.vlm import VLMError
        from micebench.judges.mice.if_rules import VoteFailed

        def ask(images: list[Any], template: str, **fields: Any):
            prompt = self.prompts.render(template, **fields) if template in self.prompts.templates else template
            try:
                kw = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens, "vote": vote}
                if group is not None:
                    return group.ask(self.vlm, images, prompt, **kw)
                return self.vlm.ask(images, prompt, **kw)
            except VLMError as e:
                raise VoteFailed(f"VLM call failed: {e}", e.raw) from e

        return ask

    def _compute_vote(self, req: JudgeRequest, spec: dict[str, Any], metric: str, vote: int, group=None) -> _Vote:
        from micebench.judges.mice.cc import CCNotApplicable, CCUnavailable, compute_cc
        from micebench.judges.mice.ga import read_final
        from micebench.judges.mice.if_rules import RULES, RuleContext, VoteFailed

        try:
            if metric == "if":
                ctx = RuleContext(req.previous, req.output, self.detector, self._ask(vote, group),
                                  self.config.yes_match)  # fmt: skip
                r = RULES[req.turn.task_type](spec["parsed"], ctx)
                return _Vote(r.score, r.reason, r.raw)
            if metric == "ga":
                images = [req.source_image, *req.outputs]
                reply = self._ask(vote, group)(images, spec["prompt"])
                ok = read_final(reply.text, reply.truncated)
                return _Vote(1.0 if ok else 0.0, f"final verdict {'yes' if ok else 'no'}", reply.text)
            turn = req.turn
            res = compute_cc(
                req.source_image, req.output, turn.unchanged_objects, turn.all_objects, turn.bg_consistency,
                self.detector, self.features, self.config.patch_tokens,
            )  # fmt: skip
            return _Vote(res.score, res.reason)
        except VoteFailed as e:
            return _Vote(None, e.reason, e.raw)
        except (CCUnavailable, CCNotApplicable) as e:
            return _Vote(None, str(e))
        except Exception as e:  # a backend crash on one turn is recorded on that turn, not raised
            return _Vote(None, f"{type(e).__name__}: {e}")

    def _aggregate(self, metric: str, votes: list[_Vote]) -> Judgement:
        meta = self._meta(metric)
        ok = [v.score for v in votes if v.score is not None]
        n = len(votes)
        raws = [v.raw for v in votes if v.raw]
        raw = "\n---\n".join(raws)[:8000]
        if self.upstream is not None and ok:  # upstream votes always carry a number
            from micebench.judges.mice.upstream_judge import upstream_reason

            return Judgement(metric=metric, score=sum(ok) / len(ok), votes=tuple(v.score for v in votes),
                             reason=upstream_reason(votes), raw=raw, **meta)  # fmt: skip
        if not ok:
            reasons = "; ".join(dict.fromkeys(v.reason for v in votes))
            return Judgement.unscored(metric, f"0/{n} votes succeeded: {reasons}", raw=raw, votes=(None,) * n, **meta)
        failed = [v.reason for v in votes if v.score is None]
        reason = f"{len(ok)}/{n} votes succeeded"
        first = next(v.reason for v in votes if v.score is not None)
        reason += f"; {first}" if n == 1 else f"; e.g. {first}"
        if failed:
            reason += f"; failures: {'; '.join(dict.fromkeys(failed))}"
        return Judgement(
            metric=metric,
            score=sum(ok) / len(ok),
            votes=tuple(v.score for v in votes),
            reason=reason,
            raw=raw,
            **meta,
        )

    def close(self) -> None:
        if self._vlm is not None and hasattr(self._vlm, "close"):
            self._vlm.close()  # its HTTP connections; it reconnects if used again
        for c in (self._vote_cache, self._request_cache):
            if c is not None:
                c.close()
        self._vote_cache = self._request_cache = None
