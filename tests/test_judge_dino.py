"""The dino judge on a tiny random DINOv3 saved with save_pretrained, checked against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from judge_fixtures import save_tiny_dinov3, session, turn
from PIL import Image

from micebench.judges.base import create_judge
from micebench.spec import JudgeRequest


def noise(seed, size=(40, 56)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def test_dino_similarity_equals_direct_cls_cosine(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    path = save_tiny_dinov3(tmp_path / "dino")
    j = create_judge("dino", {"features_path": str(path), "device": "cpu", "batch_size": 2})
    sess = session([turn("color_alter", "Change the color of [mug] to [red]"),
                    turn("subject_remove", "Remove [mug]")], "cu")  # fmt: skip
    src, o1, o2 = noise(0), noise(1), noise(2)
    rows = j.score([JudgeRequest(session=sess, turn_index=0, source_image=src, outputs=(o1,)),
                    JudgeRequest(session=sess, turn_index=1, source_image=src, outputs=(o1, o2))])  # fmt: skip
    proc, model = AutoImageProcessor.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        cls = model(**proc(images=[src, o1, o2], return_tensors="pt")).last_hidden_state[:, 0]
    cos = torch.nn.functional.cosine_similarity
    assert [x.metric for x in rows[0]] == ["dino_src", "dino_prev"]
    assert rows[0][0].score == pytest.approx(float(cos(cls[1], cls[0], dim=0)), abs=1e-5)
    assert rows[0][1].score == rows[0][0].score  # turn 1: previous is the source
    assert rows[1][0].score == pytest.approx(float(cos(cls[2], cls[0], dim=0)), abs=1e-5)
    assert rows[1][1].score == pytest.approx(float(cos(cls[2], cls[1], dim=0)), abs=1e-5)
    assert rows[1][0].model == str(path) and rows[1][0].judge == "dino"
