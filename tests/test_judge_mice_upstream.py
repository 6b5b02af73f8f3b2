"""The mice judge's protocol=upstream, rule by rule, next to the strict default (fake backends).

Images are textured (a palette colour plus noise) so the JPEG hops really change pixels; the fakes
recognise an image by its mean colour, which JPEG keeps.
"""

from __future__ import annotations

import numpy as np
import pytest
from judge_fixtures import PALETTE, session, turn
from PIL import Image
from upstream_fixtures import write_fake_editr2

from micebench import upstream
from micebench.errors import SetupError
from micebench.judges.backends.detector import Detection
from micebench.judges.backends.features import PatchFeatures
from micebench.judges.backends.vlm import VLMError, VLMReply
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.judges.mice.upstream_if import count_objects, jpeg_round_trip, parse_upstream
from micebench.options import OptionsError, build_config
from micebench.spec import JudgeRequest, ScoreStatus


def textured(name: str, size: int = 64, seed: int = 0) -> Image.Image:
    noise = np.random.RandomState(seed).randint(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(np.array(PALETTE[name]) + noise, 0, 255).astype(np.uint8))


def name_of(img) -> str:
    mean = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
    best = min(PALETTE, key=lambda n: np.abs(mean - np.array(PALETTE[n])).sum())
    return best if np.abs(mean - np.array(PALETTE[best])).sum() < 30 else "?"


def D(x1, y1, x2, y2, score=0.9, index=0) -> Detection:
    return Detection(box=(x1, y1, x2, y2), score=score, index=index)


class Detector:
    name, revision = "fake-detector", "r0"

    def __init__(self, table):
        self.table, self.seen = table, []

    def detect(self, image, phrases, threshold):
        self.seen.append((name_of(image), tuple(phrases), image))
        return [d for p in phrases for d in self.table.get(name_of(image), {}).get(p, []) if d.score > threshold]


class VLM:
    name, revision = "fake-vlm", "v0"

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def ask(self, images, prompt, *, temperature, max_tokens, vote=0):
        self.calls.append((prompt, images))
        text = self.answer(prompt, [name_of(i) for i in images]) if callable(self.answer) else self.answer
        if isinstance(text, Exception):
            raise text
        return VLMReply(text=text, finish_reason="stop")


class Features:
    """CLS [1, 0]; 'patch' tokens all [1, 0] on a 4x4 grid of a 64x64 input, no registers."""

    name, revision = "fake-features", "f0"

    def encode(self, images):
        return [PatchFeatures(cls=np.array([1.0, 0.0]), patches=np.tile([1.0, 0.0], (4, 4, 1)),
                              registers=np.zeros((0, 2)), input_size=(64, 64)) for _ in images]  # fmt: skip


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "Edit-R2"
    monkeypatch.setattr(upstream, "PINS", write_fake_editr2(root))
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    return root


def judge(protocol, repo=None, detector=None, vlm=None, features=None, **kw):
    opts = {"protocol": protocol, "votes": 1, "cache_path": "none", **kw}
    if protocol == "upstream":
        opts["upstream_repo"] = str(repo)
    return MiceJudge(MiceConfig(**opts), detector=detector or Detector({}), vlm=vlm or VLM("yes"),
                     features=features or Features())  # fmt: skip


def req(turns, t=0, subset="cm", outputs=None):
    outs = outputs or tuple(textured(f"out{k + 1}", seed=k + 1) for k in range(t + 1))
    return JudgeRequest(session=session(turns, subset=subset), turn_index=t, source_image=textured("src"), outputs=outs)


def score(j, r):
    return {x.metric: x for x in j.score([r])[0]}


COLOR = turn("color_alter", "Change the color of [mug] to [red]", unchanged_objects=("table",), all_objects=("mug",))


def test_upstream_sends_exactly_the_extracted_text(repo):
    vlm = VLM(lambda p, i: "<answer_final> yes </answer_final>" if p.startswith("PH-GA") else "yes")
    got = score(judge("upstream", repo, vlm=vlm), req([COLOR]))
    prompts = [p for p, _ in vlm.calls]
    assert "PH-COLOR is mug now red?" in prompts
    assert f"PH-GA-CM header\nPH-ROUND 1 :: {COLOR.instruction}\nPH-GA-CM footer" in prompts
    assert got["if"].score == 1.0 and got["ga"].score == 1.0
    add = turn("subject_add", "Add [cat]")
    vlm2 = VLM("no")
    score(judge("upstream", repo, vlm=vlm2), req([add]))
    assert "PH-ADD-CHECK <Add [cat]>\nanswer yes/no" in [p for p, _ in vlm2.calls]


def test_yes_is_a_substring_and_a_failed_call_reads_as_no(repo):
    assert score(judge("upstream", repo, vlm=VLM("My EYES see it.")), req([COLOR]))["if"].score == 1.0
    failed = score(judge("upstream", repo, vlm=VLM(VLMError("HTTP 502"))), req([COLOR]))["if"]
    assert failed.score == 0.0 and "VLM call failed" in failed.reason and "-> 'no'" in failed.reason
    assert failed.protocol == "upstream" and failed.reason.startswith("upstream:")
    strict = score(judge("strict", vlm=VLM(VLMError("HTTP 502"))), req([COLOR]))["if"]
    assert strict.status == ScoreStatus.unscored and strict.score is None and strict.protocol == "strict"


def test_empty_unchanged_objects_is_half_upstream_and_not_applicable_strict(repo):
    t = turn("color_alter", "Change the color of [mug] to [red]", unchanged_objects=(), all_objects=("mug",))
    up = score(judge("upstream", repo), req([t]))["cc"]
    assert up.score == 0.5 and up.reason == "upstream: empty unchanged_objects -> 0.5" and up.votes == (0.5,)
    strict = score(judge("strict"), req([t]))["cc"]
    assert strict.status == ScoreStatus.not_applicable and strict.score is None


def test_background_with_no_half_kept_patch_is_zero_and_averaged_in(repo):
    """The table box leaves a 6-pixel strip at the bottom: no 16x16 patch keeps half its area. Upstream: background 0.0,
    CC = (1.0 + 0.0) / 2. Strict: no background term, CC = the object term."""
    table = {"src": {"mug": [D(0.4, 0.4, 0.6, 0.6)], "table": [D(0.0, 0.0, 1.0, 0.9)]}}
    t = turn("color_alter", "Change the color of [mug] to [red]", unchanged_objects=("mug",), all_objects=("table",))
    up = score(judge("upstream", repo, detector=Detector(table)), req([t]))["cc"]
    assert up.score == pytest.approx(0.5) and "background 0.0000" in up.reason and "object 1.0000" in up.reason
    strict = score(judge("strict", detector=Detector(table)), req([t]))["cc"]
    assert strict.score == pytest.approx(1.0) and "no background patch left" in strict.reason
    small = {"src": {"mug": [D(0.4, 0.4, 0.6, 0.6)], "table": [D(0.1, 0.1, 0.3, 0.3)]}}
    assert score(judge("upstream", repo, detector=Detector(small)), req([t]))["cc"].score == pytest.approx(1.0)


def test_bg_consistency_false_and_no_term_follow_the_client(repo):
    t = turn("color_alter", "Change the color of [mug] to [red]", unchanged_objects=("mug",), all_objects=("mug",),
             bg_consistency=False)  # fmt: skip
    nothing = score(judge("upstream", repo), req([t]))["cc"]  # nothing detected: no object term
    assert nothing.score == 0.5 and "no term -> 0.5" in nothing.reason
    assert score(judge("strict"), req([t]))["cc"].status == ScoreStatus.unscored


def test_boxes_keep_the_detector_query_order(repo):
    """position_change takes the first box: upstream the first in query order, strict the best score."""
    cats = [D(0.05, 0.4, 0.25, 0.6, score=0.5, index=0), D(0.75, 0.4, 0.95, 0.6, score=0.9, index=1)]
    dog = [D(0.4, 0.4, 0.6, 0.6)]
    table = {"src": {"cat": cats, "dog": dog}, "out1": {"cat": cats, "dog": dog}}
    t = turn("position_change", "Change the position of [cat] to [left] of [dog]")
    assert score(judge("upstream", repo, detector=Detector(table)), req([t]))["if"].score == 1.0
    assert score(judge("strict", detector=Detector(table)), req([t]))["if"].score == 0.0


def test_centres_are_whole_pixels(repo):
    """The cat's centre is 0.031 right of the dog's: 1.98 px, truncated to 1 px = 0.0156 < the 0.03 margin."""
    table = {"src": {"dog": [D(0.4, 0.4, 0.6, 0.6)]}, "out1": {"cat": [D(0.481, 0.4, 0.581, 0.6)]}}
    t = turn("subject_add", "Add [cat] on the [right] of [dog]")
    assert score(judge("upstream", repo, detector=Detector(table)), req([t]))["if"].score == 0.0
    assert score(judge("strict", detector=Detector(table)), req([t]))["if"].score == 1.0


def test_detector_and_vlm_see_two_jpeg_hops_and_ga_sees_the_pixels(repo):
    det, vlm = Detector({}), VLM(lambda p, i: "no")
    r = req([turn("subject_remove", "Remove [cat]")])
    score(judge("upstream", repo, detector=det, vlm=vlm), r)
    seen = det.seen[0][2]
    twice = jpeg_round_trip(jpeg_round_trip(r.source_image))
    assert np.array_equal(np.asarray(seen), np.asarray(twice))
    assert not np.array_equal(np.asarray(seen), np.asarray(r.source_image))
    vlm_c = VLM(lambda p, i: "no")
    score(judge("upstream", repo, vlm=vlm_c), req([COLOR]))
    if_images = next(imgs for p, imgs in vlm_c.calls if p.startswith("PH-COLOR"))
    assert np.array_equal(np.asarray(if_images[1]), np.asarray(jpeg_round_trip(jpeg_round_trip(r.output))))
    ga_images = next(imgs for p, imgs in vlm_c.calls if p.startswith("PH-GA"))
    assert np.array_equal(np.asarray(ga_images[0]), np.asarray(r.source_image))  # PNG upstream: untouched


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("<answer_turn_1> no </answer_turn_1>\n<answer_final> no </answer_final> <answer_final> yes </answer_final>",
         0),  # the first tag decides
        ("<ANSWER_FINAL>YES</ANSWER_FINAL>", 1),
        ("FINAL: yes", 0),  # no tag: 0 upstream
    ],
)
def test_answer_final_is_read_as_upstream(repo, reply, expected):
    got = score(judge("upstream", repo, vlm=VLM(lambda p, i: reply)), req([COLOR]))["ga"]
    assert got.score == expected and got.status == ScoreStatus.ok
    if "answer_final" not in reply.lower():
        assert "no <answer_final> tag -> 0" in got.reason


def test_a_reply_without_a_verdict_is_unscored_in_strict():
    got = score(judge("strict", vlm=VLM("<answer_final> yes </answer_final>")), req([COLOR]))["ga"]
    assert got.status == ScoreStatus.unscored


def test_empty_bracket_items_score_zero_upstream_and_are_invalid_strict(repo):
    t = turn("text_change", "Replace the text '[]' on [sign] with '[]'")
    up = score(judge("upstream", repo, votes=2), req([t]))["if"]
    assert up.score == 0.0 and up.votes == (0.0, 0.0) and "does not match" in up.reason
    assert score(judge("strict"), req([t]))["if"].status == ScoreStatus.not_applicable


def test_ga_beyond_the_image_limit_scores_zero_upstream(repo):
    turns = [COLOR] * 4
    got = score(judge("upstream", repo), req(turns, t=3, outputs=tuple(textured("out1") for _ in range(4))))["ga"]
    assert got.score == 0.0 and "exceed" in got.reason
    strict = score(judge("strict"), req(turns, t=3, outputs=tuple(textured("out1") for _ in range(4))))["ga"]
    assert strict.status == ScoreStatus.unscored


def test_a_failed_request_is_half_and_failures_are_not_cached(repo, tmp_path):
    empty = Image.new("RGB", (0, 0))  # an image no JPEG encoder takes
    bad = JudgeRequest(session=session([COLOR]), turn_index=0, source_image=textured("src"), outputs=(empty,))
    cc = score(judge("upstream", repo), bad)["cc"]
    assert cc.score == 0.5 and cc.reason.startswith("upstream:") and "-> 0.5" in cc.reason
    cache = str(tmp_path / "votes.sqlite")
    down = judge("upstream", repo, vlm=VLM(VLMError("HTTP 503")), cache_path=cache)
    assert score(down, req([COLOR]))["if"].score == 0.0
    down.close()
    up = VLM("yes")
    j = judge("upstream", repo, vlm=up, cache_path=cache)
    assert score(j, req([COLOR]))["if"].score == 1.0 and any(p.startswith("PH-COLOR") for p, _ in up.calls)
    j.close()
    again = VLM(VLMError("would fail"))
    j2 = judge("upstream", repo, vlm=again, cache_path=cache)
    assert score(j2, req([COLOR]))["if"].score == 1.0  # the real answer came from the cache
    j2.close()


def test_protocol_is_in_describe_and_every_judgement(repo):
    up, strict = judge("upstream", repo), judge("strict")
    assert up.describe()["protocol"] == "upstream" and up.describe()["upstream_commit"] == upstream.EDIT_R2_COMMIT
    assert strict.describe()["protocol"] == "strict" and "upstream_commit" not in strict.describe()
    assert up.describe()["config"]["features_backend"] == "timm"
    assert up.describe()["config"]["features_path"] == "timm/vit_large_patch16_dinov3.lvd1689m"
    assert strict.describe()["config"]["features_backend"] == "transformers"
    assert all(j.protocol == "upstream" for j in up.score([req([COLOR])])[0])


def test_a_missing_or_wrong_checkout_stops_at_construction(repo, tmp_path, monkeypatch):
    with pytest.raises(SetupError, match=upstream.EDIT_R2_COMMIT):
        MiceConfig(protocol="upstream")  # no upstream_repo, no environment variable
    monkeypatch.setattr(upstream, "PINS", {k: "0" * 64 for k in upstream.PINS})
    with pytest.raises(SetupError, match="differs from that commit"):
        MiceConfig(protocol="upstream", upstream_repo=str(repo))
    from micebench.judges.base import create_judge

    with pytest.raises(SetupError):  # through the CLI's path: not turned into an options error
        create_judge("mice", {"protocol": "upstream", "upstream_repo": str(tmp_path / "nowhere")})
    with pytest.raises(OptionsError, match="yes_match=substring"):
        build_config(MiceConfig, {"protocol": "upstream", "upstream_repo": str(repo), "yes_match": "leading"}, "test")


def test_upstream_parsing_and_counting_units():
    assert parse_upstream("color_alter", "Change the color of [ mug ] to [red]") == [" mug ", "red"]
    assert parse_upstream("color_alter", "Change the colour of [mug] to [red]") is None
    assert parse_upstream("text_change", "Replace the text '[]' on [sign] with '[OPEN]'") is None
    assert parse_upstream("background_change", "Change the background to beach, remain the dog,cat unchanged") == [
        "beach", "dog", "cat"]  # fmt: skip
    a, b, c = (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 0.85), (0.0, 0.0, 1.0, 0.72)  # a~b, b~c, a !~ c
    assert count_objects([a, b, c]) == 2 and count_objects([b, a, c]) == 1  # the order matters, as upstream
