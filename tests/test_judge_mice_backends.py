"""The transformers backends of the mice judge on tiny random models saved with save_pretrained.

GroundingDINO (tiny Swin + BERT), DINOv3 and Qwen2.5-VL are built from small configs, written to
disk in the real layout, and loaded back by path, by the backends and by the judge's config.
"""

from __future__ import annotations

import numpy as np
import pytest
from judge_fixtures import save_tiny_dinov3, save_tiny_grounding_dino, save_tiny_qwen25vl, session, turn
from PIL import Image

from micebench.judges.backends.detector import CachedDetector, GroundingDinoDetector
from micebench.spec import JudgeRequest, ScoreStatus


@pytest.fixture(scope="module")
def gdino_dir(tmp_path_factory):
    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


def picture(seed, w=300, h=260):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_grounding_dino_detects_by_path(gdino_dir):
    import torch
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    d = GroundingDinoDetector(str(gdino_dir), "cpu")
    assert d.caption(["Red mug.", " cat "]) == "red mug . cat ."
    img = picture(0)
    low, high = d.detect(img, ["cat", "red mug"], 0.2), d.detect(img, ["cat", "red mug"], 0.6)
    assert [x.score for x in low] == sorted((x.score for x in low), reverse=True)
    assert all(x.score >= 0.6 for x in high) and {(x.box, x.score) for x in high} <= {(x.box, x.score) for x in low}
    # the number kept is the number of queries whose best token probability passes the threshold
    proc, model = AutoProcessor.from_pretrained(gdino_dir), GroundingDinoForObjectDetection.from_pretrained(gdino_dir)
    with torch.no_grad():
        out = model(**proc(images=img, text="cat . red mug .", return_tensors="pt"))
    best = out.logits.sigmoid().max(-1).values[0]
    assert len(low) == int((best > 0.2).sum()) and len(high) == int((best > 0.6).sum())
    boxes = out.pred_boxes[0][best > 0.2]
    expected = sorted((b[0] - b[2] / 2).item() for b in boxes)
    assert sorted(x.box[0] for x in low) == pytest.approx(expected, abs=1e-6)  # normalised, not pixels
    assert d.detect(img, [], 0.2) == []


def test_cached_detector_runs_each_question_once(gdino_dir):
    c = CachedDetector(GroundingDinoDetector(str(gdino_dir), "cpu"))
    img = picture(1)
    a = c.detect(img, ["cat"], 0.3)
    assert c.detect(img.copy(), ["cat"], 0.3) == a and c.calls == 1
    c.detect(img, ["cat"], 0.35)
    assert c.calls == 2


def test_bad_model_path_is_a_clear_error(tmp_path):
    from micebench.errors import SetupError

    with pytest.raises(SetupError, match="GroundingDINO detector: .*missing' is not an existing folder"):
        GroundingDinoDetector(str(tmp_path / "missing"), "cpu")


def test_mice_judge_end_to_end_on_tiny_models(gdino_dir, tmp_path):
    """Real (random) backends from paths: every judgement is valid, and unreadable VLM answers are
    unscored votes, never numbers."""
    from micebench.judges.base import create_judge

    dino = save_tiny_dinov3(tmp_path / "dino")
    qwen = save_tiny_qwen25vl(tmp_path / "qwen")
    judge = create_judge("mice", {
        "vlm_backend": "transformers", "vlm_path": str(qwen), "detector_path": str(gdino_dir),
        "features_path": str(dino), "device": "cpu", "votes": 2, "max_tokens": 4, "concurrency": 2,
        "cache_path": str(tmp_path / "cache.sqlite"),
    })  # fmt: skip
    turns = [
        turn("color_alter", "Change the color of [mug] to [red]", unchanged_objects=("cat", "mug"),
             all_objects=("cat", "mug")),
        turn("subject_remove", "Remove [cat]", unchanged_objects=("mug",), all_objects=("cat", "mug"),
             bg_consistency=False),
    ]  # fmt: skip
    sess = session(turns, "cu")
    src, o1, o2 = picture(2), picture(3, 256, 256), picture(4, 256, 256)
    reqs = [JudgeRequest(session=sess, turn_index=0, source_image=src, outputs=(o1,)),
            JudgeRequest(session=sess, turn_index=1, source_image=src, outputs=(o1, o2))]  # fmt: skip
    rows = judge.score(reqs)
    for row in rows:
        assert [j.metric for j in row] == ["if", "cc", "ga"]
        for j in row:
            assert j.prompt_hash == judge.prompt_hash and j.judge == "mice" and j.model
            if j.status == ScoreStatus.ok:
                assert 0.0 <= j.score <= 1.0 or j.metric == "cc"
                assert sum(v is not None for v in j.votes) >= 1
            else:
                assert j.score is None and j.reason
    color_if, ga = rows[0][0], rows[0][2]
    # a random LM does not start its answer with yes/no, and never writes FINAL: both are unscored
    assert color_if.status == ScoreStatus.unscored and "yes or no" in color_if.reason and color_if.votes == (None,) * 2
    assert ga.status == ScoreStatus.unscored
    assert rows[1][0].status == ScoreStatus.ok and rows[1][0].votes[0] in (0.0, 1.0)  # detector-only rule
    assert str(qwen) in color_if.model and str(gdino_dir) in color_if.model
    assert color_if.revision.count("local:") == 2 and rows[0][1].revision.count("local:") == 2
    judge.close()
