"""CC of the mice judge against a by-hand computation on a tiny random DINOv3 saved to disk.

Two unchanged objects, background term on; the expected number is computed here directly with
transformers and torch (crop, CLS/mean-patch cosines, mask pooled onto the real patch grid,
weights >= 0.5, weighted mean of L2-normalised tokens) and must equal the judge's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from judge_fixtures import FakeDetector, FakeVLM, det, save_tiny_dinov3, session, turn
from PIL import Image

from micebench.judges.backends.features import Dinov3Features
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.spec import JudgeRequest, ScoreStatus

SIZE = 64


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    return save_tiny_dinov3(tmp_path_factory.mktemp("dinov3"), image_size=64)


def noise(seed: int, size=SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


class ByImage(FakeDetector):
    """FakeDetector keyed by image identity (noise images have no palette colour)."""

    def __init__(self, table):
        super().__init__({})
        self.by_id = table

    def detect(self, image, phrases, threshold):
        key = "src" if image.tobytes() == SRC.tobytes() else "out"
        found = [d for p in phrases for d in self.by_id.get(key, {}).get(p, []) if d.score >= threshold]
        return sorted(found, key=lambda d: -d.score)


SRC = noise(1)
OUT = noise(2, size=48)  # a different size: the judge resizes it to the source's
BOX_CUP, BOX_BOOK = det(0.1, 0.1, 0.45, 0.5, 0.8), det(0.5, 0.55, 0.9, 0.95, 0.6)
TABLE = {
    "src": {"cup": [BOX_CUP], "book": [BOX_BOOK], "lamp": [det(0.0, 0.0, 0.2, 0.2, 0.34)]},  # lamp below 0.35
    "out": {"book": [det(0.55, 0.5, 0.95, 0.9, 0.7)]},
}


def by_hand(dino_dir, bg: bool) -> float:
    from transformers import AutoImageProcessor, AutoModel

    proc = AutoImageProcessor.from_pretrained(dino_dir)
    model = AutoModel.from_pretrained(dino_dir).eval()
    regs = model.config.num_register_tokens
    out = OUT.resize(SRC.size, Image.LANCZOS)

    def feats(images):
        with torch.no_grad():
            px = proc(images=images, return_tensors="pt")["pixel_values"]
            return model(pixel_values=px).last_hidden_state.double(), px.shape[-2:]

    def crop(img, b):
        w, h = img.size
        return img.crop((int(b[0] * w), int(b[1] * h), int(b[2] * w), int(b[3] * h)))

    sims = []
    for b in (BOX_CUP.box, BOX_BOOK.box):
        f, _ = feats([crop(SRC, b), crop(out, b)])
        cls = F.cosine_similarity(f[0, 0], f[1, 0], dim=0)
        mean = F.cosine_similarity(f[0, 1 + regs :].mean(0), f[1, 1 + regs :].mean(0), dim=0)
        sims.append(0.5 * cls.item() + 0.5 * mean.item())
    obj = sum(sims) / 2
    if not bg:
        return obj
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    for b in (BOX_CUP.box, BOX_BOOK.box, TABLE["out"]["book"][0].box):
        x1, y1, x2, y2 = int(b[0] * SIZE), int(b[1] * SIZE), int(b[2] * SIZE), int(b[3] * SIZE)
        mask[y1 : y2 + 1, x1 : x2 + 1] = 0  # PIL rectangles include both corners
    f, (h, w) = feats([SRC, out])
    m = torch.from_numpy(np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST), np.float64) / 255)
    rows, cols = h // 16, w // 16
    weights = F.avg_pool2d(m[None, None], kernel_size=16).reshape(-1)
    assert weights.numel() == rows * cols
    weights = torch.where(weights >= 0.5, weights, torch.zeros_like(weights))
    t0 = F.normalize(f[0, 1 + regs :], dim=-1)
    t1 = F.normalize(f[1, 1 + regs :], dim=-1)
    m0 = (t0 * weights[:, None]).sum(0) / (weights.sum() + 1e-6)
    m1 = (t1 * weights[:, None]).sum(0) / (weights.sum() + 1e-6)
    return (obj + F.cosine_similarity(m0, m1, dim=0).item()) / 2


def cc_judgement(dino_dir, bg=True, unchanged=("cup", "book", "lamp"), table=TABLE):
    t = turn("subject_remove", "Remove [vase]", unchanged_objects=unchanged, all_objects=("cup", "book"),
             bg_consistency=bg)  # fmt: skip
    judge = MiceJudge(MiceConfig(cache_path="none", votes=1), detector=ByImage(table),
                      features=Dinov3Features(str(dino_dir), "cpu"), vlm=FakeVLM("FINAL: yes"))  # fmt: skip
    req = JudgeRequest(session=session([t], "cu"), turn_index=0, source_image=SRC, outputs=(OUT,))
    (row,) = judge.score([req])
    return {j.metric: j for j in row}["cc"]


@pytest.mark.parametrize("bg", [True, False])
def test_cc_equals_hand_computation(dino_dir, bg):
    jd = cc_judgement(dino_dir, bg)
    assert jd.status == ScoreStatus.ok, jd.reason
    expected = by_hand(dino_dir, bg)
    assert jd.score == pytest.approx(expected, abs=1e-9)
    assert jd.votes == (jd.score,) and "2 box(es)" in jd.reason
    assert ("background" in jd.reason) == bg
    assert jd.model.endswith(str(dino_dir)) and jd.prompt_hash


def test_cc_not_applicable_and_unscored(dino_dir):
    jd = cc_judgement(dino_dir, unchanged=())
    assert jd.status == ScoreStatus.not_applicable and "unchanged_objects" in jd.reason
    jd = cc_judgement(dino_dir, bg=False, table={})
    assert jd.status == ScoreStatus.unscored and jd.score is None and "none of the unchanged objects" in jd.reason


def test_upstream_patch_switch_changes_the_number(dino_dir):
    from micebench.judges.mice import cc

    f = Dinov3Features(str(dino_dir), "cpu").encode([SRC, OUT.resize(SRC.size)])
    real = cc.crop_similarity(f[0], f[1], "real")
    upstream = cc.crop_similarity(f[0], f[1], "upstream")
    assert real != pytest.approx(upstream)
    # upstream guesses the grid from 4 registers + 16 patches = 20 tokens: 4 x 5, not the real 4 x 4
    assert cc._upstream_grid(20, 64, 64) == (4, 5) and f[0].grid == (4, 4)
    mask = cc.background_mask(SRC.size, [BOX_CUP.box])
    assert cc.masked_similarity(f[0], f[1], mask, "upstream")[1] != cc.masked_similarity(f[0], f[1], mask, "real")[1]
