"""A judge that fails on chosen sessions, for runner tests. Used as ``faulty_judges:FlakyJudge``."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.spec import Judgement


class FlakyJudge(Judge):
    metrics = ("brightness",)

    class Config(JudgeConfig):
        fail_sessions: list[str] = Field(default_factory=list)

    def score(self, requests):
        for r in requests:
            if r.session.id in self.config.fail_sessions:
                raise ValueError(f"cannot judge {r.session.id}")
        return [[Judgement(metric="brightness", score=float(np.asarray(r.output).mean() / 255))] for r in requests]
