"""Judges that fail on purpose, for runner tests. Used as ``faulty_judges:FlakyJudge``."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.spec import Judgement


class FlakyJudge(Judge):
    """Scores brightness; misbehaves on the sessions listed per fault. With ``broken_env`` set and that
    environment variable present, every call raises ``broken_kind`` (the judge itself is broken)."""

    metrics = ("brightness",)

    class Config(JudgeConfig):
        fail_sessions: list[str] = Field(default_factory=list)
        exit_sessions: list[str] = Field(default_factory=list)
        nan_sessions: list[str] = Field(default_factory=list)
        inf_sessions: list[str] = Field(default_factory=list)
        hang_sessions: list[str] = Field(default_factory=list)
        hang_seconds: float = 5.0
        broken_env: str = ""
        broken_kind: str = "ImportError"

    def score(self, requests):
        c = self.config
        if c.broken_env and os.environ.get(c.broken_env):
            raise {"ImportError": ImportError, "ValueError": ValueError}[c.broken_kind]("judge backend unavailable")
        out = []
        for r in requests:
            sid = r.session.id
            if sid in c.fail_sessions:
                raise ValueError(f"cannot judge {sid}")
            if sid in c.exit_sessions:
                sys.exit(0)
            if sid in c.hang_sessions:
                time.sleep(c.hang_seconds)
            score = float(np.asarray(r.output).mean() / 255)
            if sid in c.nan_sessions:
                score = float("nan")
            if sid in c.inf_sessions:
                score = float("-inf")
            out.append([Judgement(metric="brightness", score=score)])
        return out


class BrokenJudge(FlakyJudge):
    """Fails in ``where`` (init, preflight) by raising ``how`` (raise, exit, setup)."""

    class Config(FlakyJudge.Config):
        where: str = "init"
        how: str = "raise"

    def __init__(self, config=None):
        super().__init__(config)
        self._fail("init")

    def _fail(self, where: str) -> None:
        if self.config.where != where:
            return
        if self.config.how == "exit":
            sys.exit(4)
        if self.config.how == "setup":
            from micebench.errors import SetupError

            raise SetupError("broken judge: its model is missing")
        raise RuntimeError(f"broken {where}")

    def preflight(self):
        self._fail("preflight")
