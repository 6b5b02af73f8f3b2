"""Refusals and non-answers are failed votes in the strict reading, never yes/no verdicts."""

from __future__ import annotations

import pytest
from judge_fixtures import FakeDetector, FakeVLM, request, session, turn

from micebench.judges.mice.ga import read_final
from micebench.judges.mice.if_rules import VoteFailed, read_yes_no
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.judges.refusals import refusal
from micebench.spec import ScoreStatus

REFUSALS = [
    "No images were provided.",
    "No image was attached to your message, so I can't compare them.",
    "I cannot see the image.",
    "I'm unable to view the provided images.",
    "I don't see any images in this conversation.",
    "Yes, I can help with that! Please upload the two images.",
    "Yes, I'd be happy to help you compare the images.",
    "Sure, please provide the images.",
    "No, I can't view images.",
    "I'm sorry, but I can't assist with that.",
    "As an AI language model, I do not have the ability to see pictures.",
    "The images did not come through.",
    "There is no image.",
    "Yes or no.",
    "",
    "  ...  ",
    "**No** images were **provided**.",
    "I can\u2019t see the images you mentioned.",
]
ANSWERS = [
    "Yes.",
    "No.",
    "Yes, the mug is red.",
    "No, the mug is blue.",
    "No. I can't see any red in the image.",
    "No, there is no picture frame on the wall.",
    "Yes, I can see that the mug in the second image is red.",
    "No, the image doesn't appear to show a red mug.",
    "No, I don't see the mug in the edited image.",
    "Yes - the background shows a beach.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_recognised(text):
    assert refusal(text), text
    with pytest.raises(VoteFailed, match="not an answer"):
        read_yes_no(text)


@pytest.mark.parametrize("text", ANSWERS)
def test_answers_are_still_answers(text):
    assert refusal(text) is None, text
    assert read_yes_no(text) == text.lower().startswith("yes")


def test_upstream_substring_reading_is_unchanged():
    # the upstream reproduction counts what upstream counts, on purpose
    assert read_yes_no("No images were provided.", "substring") is False
    assert read_yes_no("Yes, I can help with that!", "substring") is True


def test_ga_refusal_with_a_final_line_is_not_a_verdict():
    with pytest.raises(VoteFailed, match="not a verdict"):
        read_final("No images were provided, so I cannot check any round.\nFINAL: no")
    with pytest.raises(VoteFailed, match="not a verdict"):
        read_final("I'm sorry, but I can't view images. FINAL: yes")
    assert read_final("Round 1: the mug is red.\nFINAL: yes") is True
    assert read_final("Round 1: no picture frame was added.\nFINAL: no") is False


def judge(answer, t, votes=2):
    j = MiceJudge(MiceConfig(cache_path="none", votes=votes, concurrency=2), detector=FakeDetector({}),
                  vlm=FakeVLM(answer))  # fmt: skip
    (row,) = j.score([request(session([t], subset="cu"), 0)])
    return {jd.metric: jd for jd in row}


def test_judge_records_refusals_as_unscored_with_a_reason():
    t = turn("color_alter", "Change the color of [mug] to [red]")
    got = judge(lambda p, i, v: "No images were provided." if v == 0 else "Yes, I can help with that!", t)
    for m in ("if", "ga"):
        assert got[m].status == ScoreStatus.unscored and got[m].score is None, m
        assert got[m].votes == (None, None)
    assert "not an answer" in got["if"].reason and "not a verdict" in got["ga"].reason
    # one refusal among the votes: the score is the mean of the real answers only
    mixed = judge(lambda p, i, v: ("No images were provided." if v == 0 else
                                   ("Round 1: done\nFINAL: yes" if "FINAL" in p else "Yes.")), t)  # fmt: skip
    assert mixed["if"].score == 1.0 and mixed["if"].votes == (None, 1.0) and "1/2 votes" in mixed["if"].reason


def test_text_transcription_refusal_is_unscored_not_zero():
    add = turn("text_change", "Add text '[Cheers!]' on the image")
    got = judge("I cannot see the image, please upload it.", add, votes=1)
    assert got["if"].status == ScoreStatus.unscored and "not a transcription" in got["if"].reason
    assert judge("The sign reads: no text here", add, votes=1)["if"].score == 0.0  # a real transcription
