"""IF rules of the mice judge, one test (or more) per task type, on fake backends.

Boxes and VLM answers are hand-made; the boundaries of PROTOCOL.md section 2 are checked on both
sides: add margin 0.03, remove IoU 0.2, de-duplication IoU 0.8, detection thresholds.
"""

from __future__ import annotations

import pytest
from judge_fixtures import FakeDetector, FakeVLM, det, failing_vlm, request, session, turn

from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.spec import ScoreStatus


def judge_if(t, table, answer="yes", votes=1, **cfg):
    j = MiceJudge(
        MiceConfig(cache_path="none", votes=votes, concurrency=2, **cfg),
        detector=FakeDetector(table),
        vlm=answer if isinstance(answer, FakeVLM) else FakeVLM(answer),
    )
    (row,) = j.score([request(session([t], subset="cu"), 0)])
    return {jd.metric: jd for jd in row}["if"]


def only_if_score(t, table, answer="yes", **kw):
    jd = judge_if(t, table, answer, **kw)
    assert jd.status == ScoreStatus.ok, jd.reason
    return jd.score


# ----- subject_add ---------------------------------------------------------------------------

ADD3 = turn("subject_add", "Add [cat] on the [left] of [sofa]")
SOFA = {"src": {"sofa": [det(0.4, 0.4, 0.6, 0.6)]}}  # centre (0.5, 0.5)


def with_cat(cx: float, cy: float = 0.5, score: float = 0.9):
    return {**SOFA, "out1": {"cat": [det(cx - 0.05, cy - 0.05, cx + 0.05, cy + 0.05, score)]}}


def test_add_left_margin_boundary():
    assert only_if_score(ADD3, with_cat(0.5 - 0.0301)) == 1.0
    assert only_if_score(ADD3, with_cat(0.5 - 0.0299)) == 0.0  # inside the 0.03 margin
    assert only_if_score(ADD3, with_cat(0.5 + 0.2)) == 0.0  # wrong side


@pytest.mark.parametrize(
    "direction,cx,cy,expected",
    [("right", 0.5301, 0.5, 1.0), ("right", 0.5299, 0.5, 0.0), ("above", 0.5, 0.4699, 1.0),
     ("above", 0.5, 0.4701, 0.0), ("below", 0.5, 0.5301, 1.0), ("below", 0.5, 0.5299, 0.0)],
)  # fmt: skip
def test_add_other_directions(direction, cx, cy, expected):
    t = turn("subject_add", f"Add [cat] on the [{direction}] of [sofa]")
    assert only_if_score(t, with_cat(cx, cy)) == expected


def test_add_any_pair_counts_and_threshold():
    table = {
        "src": {"sofa": [det(0.0, 0.4, 0.2, 0.6), det(0.8, 0.4, 1.0, 0.6)]},  # centres x=0.1, 0.9
        "out1": {"cat": [det(0.45, 0.45, 0.55, 0.55, 0.31)]},  # x=0.5: left of the second sofa only
    }
    assert only_if_score(ADD3, table) == 1.0
    table["out1"]["cat"] = [det(0.45, 0.45, 0.55, 0.55, 0.29)]  # below threshold 0.3
    assert only_if_score(ADD3, table) == 0.0


def test_add_vlm_precheck_no_gives_zero_without_detection():
    d = FakeDetector(with_cat(0.2))
    j = MiceJudge(MiceConfig(cache_path="none", votes=1), detector=d, vlm=FakeVLM("No, nothing was added."))
    (row,) = j.score([request(session([ADD3], subset="cu"), 0)])
    assert row[0].score == 0.0 and "not applied" in row[0].reason
    assert d.calls == []  # the rule stops at the VLM pre-check


def test_add_plain_form():
    t = turn("subject_add", "Add [cat]")
    assert only_if_score(t, {"out1": {"cat": [det(0.1, 0.1, 0.2, 0.2, 0.3)]}}) == 1.0
    assert only_if_score(t, {"out1": {"cat": [det(0.1, 0.1, 0.2, 0.2, 0.29)]}}) == 0.0
    assert only_if_score(t, {"out1": {"cat": [det(0.1, 0.1, 0.2, 0.2)]}}, answer="no") == 0.0


# ----- subject_remove ------------------------------------------------------------------------

REMOVE = turn("subject_remove", "Remove [vase]")
VASE = det(0.0, 0.0, 0.5, 0.5)


def test_remove_iou_boundary_0_2():
    exactly_02 = det(0.25, 0.25, 0.75, 0.5)  # intersection 1/16, union 5/16
    assert only_if_score(REMOVE, {"src": {"vase": [VASE]}, "out1": {"vase": [exactly_02]}}) == 0.0
    below = det(0.26, 0.25, 0.76, 0.5)
    assert only_if_score(REMOVE, {"src": {"vase": [VASE]}, "out1": {"vase": [below]}}) == 1.0


def test_remove_not_in_output_and_not_in_previous():
    assert only_if_score(REMOVE, {"src": {"vase": [VASE]}}) == 1.0
    assert only_if_score(REMOVE, {"out1": {"vase": [VASE]}}) == 0.0
    # 0.35 threshold: a 0.34 box in the output does not count, one in the source is not found
    assert only_if_score(REMOVE, {"src": {"vase": [VASE]}, "out1": {"vase": [det(0, 0, 0.5, 0.5, 0.34)]}}) == 1.0
    assert only_if_score(REMOVE, {"src": {"vase": [det(0, 0, 0.5, 0.5, 0.34)]}}) == 0.0


def test_remove_drops_whole_image_boxes_and_uses_top_box():
    huge = det(0.0, 0.0, 0.99, 0.99, 0.99)
    assert only_if_score(REMOVE, {"src": {"vase": [VASE]}, "out1": {"vase": [huge]}}) == 1.0
    # top box of the output is elsewhere (IoU 0); a weaker box in place is ignored
    table = {"src": {"vase": [VASE]}, "out1": {"vase": [det(0.6, 0.6, 0.9, 0.9, 0.9), det(0, 0, 0.5, 0.5, 0.5)]}}
    assert only_if_score(REMOVE, table) == 1.0


# ----- subject_replace -----------------------------------------------------------------------


def test_replace_overlap_and_naive_plural_strip():
    t = turn("subject_replace", "Replace [apples] with [pears]")
    table = {"src": {"appl": [det(0.1, 0.1, 0.3, 0.3)]}, "out1": {"pear": [det(0.29, 0.29, 0.5, 0.5)]}}
    assert only_if_score(t, table) == 1.0
    table["out1"]["pear"] = [det(0.3, 0.3, 0.5, 0.5)]  # touching corners: IoU 0
    assert only_if_score(t, table) == 0.0
    assert only_if_score(t, {"src": {"appl": [det(0.1, 0.1, 0.3, 0.3)]}}, answer="yes") == 0.0
    table["out1"]["pear"] = [det(0.2, 0.2, 0.5, 0.5)]
    assert only_if_score(t, table, answer="no") == 0.0


# ----- color / material / background: VLM yes/no ----------------------------------------------


@pytest.mark.parametrize(
    "t,field",
    [
        (turn("color_alter", "Change the color of [mug] to [red]"), "red"),
        (turn("material_alter", "Change the material of [mug] to [glass]"), "glass"),
        (turn("background_change", "Change the background to [beach]"), "beach"),
    ],
)
def test_vlm_yes_no_tasks(t, field):
    vlm = FakeVLM(lambda p, imgs, v: "**Yes.** It is.")
    assert only_if_score(t, {}, vlm) == 1.0
    assert field in vlm.calls[0][0]
    expected_images = ["out1"] if t.task_type == "background_change" else ["src", "out1"]
    assert vlm.calls[0][1] == expected_images
    assert only_if_score(t, {}, "No") == 0.0
    # "eyes" is not a yes: our parser needs a leading yes/no word -> unscored, never a number
    jd = judge_if(t, {}, "The eyes suggest so")
    assert jd.status == ScoreStatus.unscored and jd.score is None and "yes or no" in jd.reason
    assert "The eyes suggest so" in jd.raw
    # the upstream switch reproduces substring matching
    assert judge_if(t, {}, "The eyes suggest so", yes_match="substring").score == 1.0


# ----- text_change ---------------------------------------------------------------------------


def test_text_replace_and_add():
    t = turn("text_change", "Replace the text '[MK]' on [bag] with '[BAG]'")
    bag = {"src": {"bag": [det(0.1, 0.1, 0.5, 0.5)]}}
    assert only_if_score(t, bag, "Brand: bag 2024") == 1.0  # case-insensitive substring
    assert only_if_score(t, bag, "MK") == 0.0
    assert only_if_score(t, {}, "BAG") == 0.0  # the object is not in the previous image
    add = turn("text_change", "Add text '[Cheers!]' on the image")
    vlm = FakeVLM("cheers! and more")
    assert only_if_score(add, {}, vlm) == 1.0 and vlm.calls[0][1] == ["out1"]


def test_text_truncated_transcription_is_unscored_not_zero():
    add = turn("text_change", "Add text '[Cheers!]' on the image")
    jd = judge_if(add, {}, FakeVLM("lorem ipsum dolor", finish_reason="length"))
    assert jd.status == ScoreStatus.unscored and "cut off" in jd.reason
    # a truncated answer that already contains the text passes
    assert judge_if(add, {}, FakeVLM("CHEERS! lorem", finish_reason="length")).score == 1.0


def test_text_empty_target_is_an_invalid_item():
    for f in ("Add text '[]' on the image", "Replace the text '[Crystal]' on [bottle] with '[]'"):
        vlm = FakeVLM("anything")
        jd = judge_if(turn("text_change", f), {}, vlm)
        assert jd.status == ScoreStatus.not_applicable and "invalid item" in jd.reason
        assert not any("Transcribe" in c[0] for c in vlm.calls)


# ----- position_change -----------------------------------------------------------------------

POS = turn("position_change", "Change the position of [lamp] to [right] of [bed]")
BED = det(0.4, 0.4, 0.6, 0.6)


def test_position_compares_output_centres_without_margin():
    table = {"src": {"bed": [BED], "lamp": [det(0.0, 0.4, 0.1, 0.5)]},
             "out1": {"bed": [BED], "lamp": [det(0.45, 0.0, 0.5501, 0.1)]}}  # fmt: skip
    assert only_if_score(POS, table) == 1.0  # centre x 0.50005 > 0.5: no margin
    table["out1"]["lamp"] = [det(0.45, 0.0, 0.55, 0.1)]  # equal centres: not right
    assert only_if_score(POS, table) == 0.0


def test_position_count_change_and_dedup_0_8():
    lamp_src = [det(0.0, 0.4, 0.1, 0.5)]
    a, b_08 = det(0.5, 0.0, 1.0, 0.625), det(0.5, 0.0, 1.0, 0.5)  # IoU exactly 0.8: two objects
    table = {"src": {"bed": [BED], "lamp": lamp_src}, "out1": {"bed": [BED], "lamp": [a, b_08]}}
    jd = judge_if(POS, table)
    assert jd.score == 0.0 and "count of [lamp] changed from 1 to 2" in jd.reason
    b_over = det(0.5, 0.0, 1.0, 0.51)  # IoU > 0.8: one object, count unchanged
    table["out1"]["lamp"] = [a, b_over]
    assert only_if_score(POS, table) == 1.0


def test_position_threshold_0_4():
    table = {"src": {"bed": [BED], "lamp": [det(0.0, 0.4, 0.1, 0.5)]},
             "out1": {"bed": [BED], "lamp": [det(0.8, 0.4, 0.9, 0.5, 0.39)]}}  # fmt: skip
    jd = judge_if(POS, table)
    assert jd.score == 0.0 and "changed from 1 to 0" in jd.reason


# ----- count_change --------------------------------------------------------------------------

COUNT = turn("count_change", "Change the count of [apple] to [3]")
A1, A2, A3 = det(0.0, 0.0, 0.2, 0.2), det(0.1, 0.7, 0.3, 0.9), det(0.5, 0.0, 1.0, 0.625)


def test_count_with_dedup_boundary():
    src = {"apple": [A1]}
    assert only_if_score(COUNT, {"src": src, "out1": {"apple": [A1, A2, A3]}}) == 1.0
    dup_08 = det(0.5, 0.0, 1.0, 0.5, 0.5)  # IoU with A3 exactly 0.8: still a separate object -> 4
    assert only_if_score(COUNT, {"src": src, "out1": {"apple": [A1, A2, A3, dup_08]}}) == 0.0
    dup_over = det(0.5, 0.0, 1.0, 0.55, 0.5)  # IoU 0.88 -> merged -> 3
    assert only_if_score(COUNT, {"src": src, "out1": {"apple": [A1, A2, A3, dup_over]}}) == 1.0
    weak = det(0.7, 0.7, 0.9, 0.9, 0.29)  # below 0.3: not counted
    assert only_if_score(COUNT, {"src": src, "out1": {"apple": [A1, A2, A3, weak]}}) == 1.0


def test_count_needs_object_in_previous():
    assert only_if_score(COUNT, {"out1": {"apple": [A1, A2, A3]}}) == 0.0


# ----- votes -----------------------------------------------------------------------------------


def test_votes_mean_of_successes_and_every_vote_stored():
    t = turn("color_alter", "Change the color of [mug] to [red]")
    answers = {0: "yes", 1: "Yes", 2: "no", 3: "maybe?"}
    jd = judge_if(t, {}, FakeVLM(lambda p, i, v: answers[v]), votes=4)
    assert jd.status == ScoreStatus.ok
    assert jd.votes == (1.0, 1.0, 0.0, None)
    assert jd.score == pytest.approx(2 / 3)
    assert jd.reason.startswith("3/4 votes succeeded")
    assert jd.judge == "mice" and jd.prompt_hash and jd.model == "fake-vlm + fake-detector" and jd.revision == "v0 + r0"


def test_all_votes_failing_is_unscored_with_reason_and_raw():
    t = turn("material_alter", "Change the material of [mug] to [glass]")
    jd = judge_if(t, {}, failing_vlm(), votes=4)
    assert jd.status == ScoreStatus.unscored and jd.score is None
    assert jd.votes == (None, None, None, None)
    assert "0/4 votes succeeded" in jd.reason and "server down" in jd.reason
    assert "502" in jd.raw


def test_detector_only_rule_needs_no_vlm():
    # subject_remove never asks the VLM: a judge without an endpoint can still score IF
    j = MiceJudge(MiceConfig(cache_path="none", votes=2), detector=FakeDetector({"src": {"vase": [VASE]}}),
                  vlm=failing_vlm())  # fmt: skip
    (row,) = j.score([request(session([REMOVE], subset="cu"), 0)])
    assert row[0].score == 1.0 and row[0].votes == (1.0, 1.0)


def test_bad_formatted_instruction_is_unscored():
    t = turn("color_alter", "Make the mug red")
    jd = judge_if(t, {})
    assert jd.status == ScoreStatus.unscored and "bad instruction" in jd.reason and "color_alter" in jd.reason
