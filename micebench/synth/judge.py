"""The ``scene`` judge: scores synthetic-suite turns from pixels against exact ground truth.

It reads only the images of the request (source, outputs so far) and the turns' ground truth stored
by the ``synth`` suite in ``Turn.metadata`` / ``Session.metadata``. Each image is parsed back into a
scene (:mod:`micebench.synth.perceive`) and scored with :mod:`micebench.synth.verdict`:

- ``if``: 1 if the turn's formatted instruction was carried out (per task type), else 0;
- ``cc``: 0..1, the worst-preserved unchanged source object / background (1 within tolerance);
- ``ga``: 1 if every round so far was followed, obeyed the session's rule, and is still in place.

A turn without synth ground truth, or whose images cannot be parsed (no known background), is
``unscored`` with the reason; CC with nothing to compare is ``not_applicable``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.spec import Judgement, JudgeRequest, MetricSpec
from micebench.synth import perceive, scene, verdict


def _img_key(img: Any, given: str = "") -> str:
    if given:
        return given
    return hashlib.sha1(img.convert("RGB").tobytes() + repr(img.size).encode()).hexdigest()


class SceneJudge(Judge):
    metrics = (
        MetricSpec(name="if", role="if", range=(0.0, 1.0), description="1 if the turn's edit was carried out, else 0"),
        MetricSpec(name="cc", role="cc", range=(0.0, 1.0),
                   description="the worst-preserved unchanged source object or background (1 within tolerance)"),
        MetricSpec(name="ga", role="ga", range=(0.0, 1.0),
                   description="1 if every round so far was followed, obeys the session's rule and still holds"),
    )
    version = "1"

    class Config(JudgeConfig):
        cache_size: int = Field(default=4096, ge=0, description="Parsed images kept in memory (by content).")

    def __init__(self, config: JudgeConfig | None = None) -> None:
        super().__init__(config)
        self._cache: dict[str, dict[str, Any]] = {}

    def _parse(self, img: Any, size: int, grid: int, key: str = "") -> dict[str, Any]:
        k = f"{_img_key(img, key)}:{size}:{grid}"
        if k not in self._cache:
            if len(self._cache) >= max(1, self.config.cache_size):
                self._cache.pop(next(iter(self._cache)))
            self._cache[k] = perceive.parse_image(img, size, grid)
        return self._cache[k]

    def score(self, requests: list[JudgeRequest]) -> list[list[Judgement]]:
        return [self._one(r) for r in requests]

    def _j(self, metric: str, score: float, reason: str = "") -> Judgement:
        return Judgement(metric=metric, score=float(score), votes=(float(score),), reason=reason, judge="scene")

    def _unscored(self, reason: str) -> list[Judgement]:
        return [Judgement.unscored(m, reason, judge="scene") for m in self.metric_names]

    def _one(self, r: JudgeRequest) -> list[Judgement]:
        source = r.session.metadata.get("source")
        metas = [t.metadata for t in r.session.turns[: r.turn_index + 1]]
        if not isinstance(source, dict) or any("target" not in m or "edit" not in m for m in metas):
            return self._unscored("no synthetic ground truth (the scene judge scores only the synth suite)")
        try:
            scene.validate_graph(source, f"session {r.session.id} source")
            for k, m in enumerate(metas):
                scene.validate_graph(m["target"], f"session {r.session.id} turn {k + 1} target")
        except ValueError as e:
            return self._unscored(f"malformed ground truth: {e}")
        size, grid = source["size"], source["grid"]
        hashes = list(r.output_hashes) if len(r.output_hashes) == len(r.outputs) else [""] * len(r.outputs)
        try:
            src_obs = self._parse(r.source_image, size, grid, r.source_hash)
            outs = [self._parse(img, size, grid, h) for img, h in zip(r.outputs, hashes, strict=False)]
        except (OSError, ValueError) as e:
            return self._unscored(f"cannot read an image: {e}")
        t = r.turn_index
        if src_obs["background"] is None:
            return self._unscored(f"source image: no known background ({src_obs['bg_share']:.0%} explained)")
        bad = [k for k, o in enumerate(outs) if o["background"] is None]
        if t in bad:
            return self._unscored(f"turn {t + 1} output: no known background ({outs[t]['bg_share']:.0%} explained)")
        if bad:  # an earlier output is unreadable: CC of this turn still stands, GA cannot (nor IF if it was the last)
            outs = outs[:]
            for k in bad:
                outs[k] = {"background": None, "objects": []}
        scores = verdict.score_turn(source, metas, r.turn.bg_consistency, src_obs, outs)
        result: list[Judgement] = []
        for m in self.metric_names:
            value, why = scores[m]
            if (m == "ga" and bad) or (m == "if" and t - 1 in bad):
                k = bad[-1] if m == "if" else bad[0]
                result.append(Judgement.unscored(m, f"turn {k + 1} output cannot be parsed", judge="scene"))
            elif value is None:
                result.append(Judgement.not_applicable(m, why, judge="scene"))
            else:
                result.append(self._j(m, value, why))
        return result
