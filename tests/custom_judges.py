"""A judge written outside micebench, declaring a lower-is-better metric with a role: nothing else
in the code base knows about it (used as ``custom_judges:DarknessJudge``)."""

from __future__ import annotations

import numpy as np

from micebench.judges.base import Judge
from micebench.spec import Judgement, MetricSpec


class DarknessJudge(Judge):
    metrics = (MetricSpec(name="darkness", role="cc", higher_is_better=False, range=(0.0, 1.0),
                          description="1 - mean brightness of the output"),)

    def score(self, requests):
        return [[Judgement(metric="darkness", score=1.0 - float(np.asarray(r.output).mean() / 255))]
                for r in requests]
