"""The ``dino`` judge: DINO similarity (cosine of CLS embeddings), MagicBrush's DINO metric.

``dino_src``: output vs source; ``dino_prev``: output vs previous image (the source at turn 1).
Runs on the same feature backend as the mice judge's CC (:class:`Dinov3Features`, any local
directory or hub id that loads with ``AutoModel``); MagicBrush used DINO ViT-S/16, the default
here is DINOv3 ViT-L/16, so numbers are comparable within this harness, not with MagicBrush's table.
Batched: the distinct images of a call are encoded together.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.judges.batching import UniqueItems
from micebench.spec import Judgement, JudgeRequest, MetricSpec


class DinoConfig(JudgeConfig):
    features_path: str = "facebook/dinov3-vitl16-pretrain-lvd1689m"
    device: str = "auto"
    batch_size: int = Field(16, ge=1)


class DinoJudge(Judge):
    Config: ClassVar[type[JudgeConfig]] = DinoConfig
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec(name="dino_src", role="cc", range=(-1.0, 1.0), description="DINO CLS similarity to the source"),
        MetricSpec(name="dino_prev", role="other", range=(-1.0, 1.0),
                   description="DINO CLS similarity to the previous image"),
    )
    name: ClassVar[str] = "dino"
    version: ClassVar[str] = "1"

    def __init__(self, config: DinoConfig | None = None, *, features=None) -> None:
        super().__init__(config)
        self._features = features

    @property
    def features(self):
        if self._features is None:
            from micebench.judges.backends.features import Dinov3Features

            c = self.config
            self._features = Dinov3Features(c.features_path, c.device, batch_size=c.batch_size)
        return self._features

    def score(self, requests: list[JudgeRequest]) -> list[list[Judgement]]:
        unique = UniqueItems()
        slot = unique.slot

        plans = []
        for r in requests:
            hashes = [r.source_hash, *r.output_hashes] if r.output_hashes else [""] * (len(r.outputs) + 1)
            plans.append((slot(r.output, hashes[r.turn_index + 1]), slot(r.source_image, hashes[0]),
                          slot(r.previous, hashes[r.turn_index])))  # fmt: skip
        images = unique.items
        feats = self.features.encode(images) if images else []
        cls = [f.cls / max(float(np.linalg.norm(f.cls)), 1e-12) for f in feats]
        meta = {"judge": "dino", "model": self.features.name, "revision": self.features.revision}
        return [
            [Judgement(metric="dino_src", score=float(cls[o] @ cls[s]), **meta),
             Judgement(metric="dino_prev", score=float(cls[o] @ cls[p]), **meta)]
            for o, s, p in plans
        ]  # fmt: skip
