"""The clip judge on a tiny random open_clip model saved to a local checkpoint file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from judge_fixtures import save_tiny_clip, session, turn
from PIL import Image

from micebench.judges.base import create_judge
from micebench.judges.clip import edit_texts
from micebench.spec import JudgeRequest, ScoreStatus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def noise(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def judge(tiny, **kw):
    cfg, ckpt = tiny
    return create_judge("clip", {"model_name": "tiny-clip-test", "checkpoint": str(ckpt),
                                 "model_config_file": str(cfg), "device": "cpu", **kw})  # fmt: skip


TURNS = [
    turn("color_alter", "Change the color of [mug] to [red]"),
    turn("subject_remove", "Remove [cat]"),
    turn("text_change", "Add text '[]' on the image"),
]


def requests():
    sess = session(TURNS, "cu")
    src, o1, o2, o3 = noise(0), noise(1), noise(2), noise(3)
    return [JudgeRequest(session=sess, turn_index=0, source_image=src, outputs=(o1,)),
            JudgeRequest(session=sess, turn_index=1, source_image=src, outputs=(o1, o2)),
            JudgeRequest(session=sess, turn_index=2, source_image=src, outputs=(o1, o2, o3))]  # fmt: skip


def test_edit_texts_per_task():
    assert edit_texts(TURNS[0]) == ("a photo of mug", "a photo of a red mug", "")
    assert edit_texts(TURNS[1]) == ("a photo of cat", "a photo", "")
    assert edit_texts(TURNS[2])[1] is None and "invalid item" in edit_texts(TURNS[2])[2]
    t = turn("count_change", "Change the count of [apple] to [3]", metadata={"target_caption": "three apples"})
    assert edit_texts(t) == (None, "three apples", "")
    assert edit_texts(turn("color_alter", "make it red"))[1] is None


def test_scores_equal_direct_open_clip(tiny):
    import open_clip

    j = judge(tiny)
    rows = j.score(requests())
    model, _, pre = open_clip.create_model_and_transforms("tiny-clip-test", pretrained=str(tiny[1]))
    tok = open_clip.get_tokenizer("tiny-clip-test")
    with torch.no_grad():
        ims = torch.nn.functional.normalize(model.encode_image(torch.stack([pre(noise(i)) for i in range(4)])), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tok(["a photo of mug", "a photo of a red mug",
                                                                    "a photo of cat", "a photo"])), dim=-1)  # fmt: skip
    by = [{x.metric: x for x in row} for row in rows]
    assert by[0]["clip_i_src"].score == pytest.approx(float(ims[1] @ ims[0]), abs=1e-5)
    assert by[1]["clip_i_src"].score == pytest.approx(float(ims[2] @ ims[0]), abs=1e-5)
    assert by[1]["clip_i_prev"].score == pytest.approx(float(ims[2] @ ims[1]), abs=1e-5)
    assert by[0]["clip_t"].score == pytest.approx(float(ims[1] @ txt[1]), abs=1e-5)
    expected_dir = torch.nn.functional.cosine_similarity(ims[1] - ims[0], txt[1] - txt[0], dim=0)
    assert by[0]["clip_dir"].score == pytest.approx(float(expected_dir), abs=1e-5)
    expected_dir = torch.nn.functional.cosine_similarity(ims[2] - ims[1], txt[3] - txt[2], dim=0)
    assert by[1]["clip_dir"].score == pytest.approx(float(expected_dir), abs=1e-5)
    assert by[1]["clip_t"].status == ScoreStatus.not_applicable
    assert by[2]["clip_t"].status == by[2]["clip_dir"].status == ScoreStatus.not_applicable
    assert by[0]["clip_t"].model == "tiny-clip-test" and by[0]["clip_t"].revision == str(tiny[1])


def test_batch_size_does_not_change_numbers(tiny):
    a = [[x.score for x in row] for row in judge(tiny, batch_size=1).score(requests())]
    b = [[x.score for x in row] for row in judge(tiny, batch_size=16).score(requests())]
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            assert (x is None and y is None) or abs(x - y) < 1e-5


def test_identity_output_has_no_direction_and_is_unscored(tiny):
    src = noise(0)
    h = "a" * 64  # the runner passes content hashes: equal pixels are encoded once
    req = JudgeRequest(session=session(TURNS[:1], "cu"), turn_index=0, source_image=src, outputs=(src.copy(),),
                       source_hash=h, output_hashes=(h,))  # fmt: skip
    (row,) = judge(tiny).score([req])
    by = {x.metric: x for x in row}
    assert by["clip_i_src"].score == pytest.approx(1.0, abs=1e-5)
    assert by["clip_dir"].status == ScoreStatus.unscored and by["clip_dir"].score is None


def test_missing_checkpoint_is_a_clear_error(tiny, tmp_path):
    j = create_judge("clip", {"model_name": "tiny-clip-test", "checkpoint": str(tmp_path / "none.pt"),
                              "model_config_file": str(tiny[0])})  # fmt: skip
    with pytest.raises(RuntimeError, match="is not a file, nor a pretrained tag"):
        j.score(requests())
