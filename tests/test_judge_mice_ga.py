"""GA of the mice judge: prompts per variant, images shown, final-verdict parsing, no fallback."""

from __future__ import annotations

from judge_fixtures import FakeDetector, FakeVLM, request, session, turn

from micebench.judges.mice.grammar import split_rule
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.spec import ScoreStatus

RULE = "Set a persistent rule: red color must be applied only to the object being added or modified."
CM = [
    turn("background_change", "Change the background to [curtain]",
         f"{RULE} With this rule active, Change the background to curtain"),
    turn("subject_remove", "Remove [scarf]", "Remove scarf"),
    turn("material_alter", "Change the material of [glasses] to [metal]", "Change the material of glasses to metal"),
]  # fmt: skip
CU = [
    turn("color_alter", "Change the color of [paper blue sign] to [yellow]",
         "Change the color of paper blue sign to yellow"),
    turn("color_alter", "Change the color of [paper yellow sign] to [black]", "Change its color to black"),
]  # fmt: skip


def ga(sess, t, answer, votes=1, **cfg):
    vlm = answer if isinstance(answer, FakeVLM) else FakeVLM(answer)
    j = MiceJudge(MiceConfig(cache_path="none", votes=votes, **cfg), detector=FakeDetector({}), vlm=vlm)
    (row,) = j.score([request(sess, t)])
    return {x.metric: x for x in row}["ga"], vlm


def ga_calls(vlm):
    return [c for c in vlm.calls if "FINAL" in c[0]]


def test_split_rule():
    s = split_rule(CM[0].instruction)
    assert s.rule == RULE and s.edit == "Change the background to curtain"
    assert split_rule("Remove it") == type(s)(rule="", edit="Remove it")


def test_cm_prompt_images_and_cumulative_rounds():
    jd, vlm = ga(session(CM, "cm"), 2, "Round 1: yes\nRound 2: yes\nRound 3: yes\nFINAL: yes")
    assert jd.status == ScoreStatus.ok and jd.score == 1.0
    prompt, images, _ = ga_calls(vlm)[0]
    assert images == ["src", "out1", "out2", "out3"]
    assert RULE in prompt and "Round 3: Change the material of glasses to metal" in prompt
    assert "resolved" not in prompt and "4 pictures" in prompt
    jd1, vlm1 = ga(session(CM, "cm"), 0, "FINAL: no")
    assert jd1.score == 0.0 and ga_calls(vlm1)[0][1] == ["src", "out1"]
    assert "Round 2" not in ga_calls(vlm1)[0][0]


def test_cu_prompt_shows_resolved_instruction():
    jd, vlm = ga(session(CU, "cu"), 1, "Round 1: yes\nRound 2: no (wrong sign)\nFINAL: **no**")
    assert jd.score == 0.0
    prompt = ga_calls(vlm)[0][0]
    assert "Round 2: Change its color to black" in prompt
    assert "Round 2 resolved: Change the color of [paper yellow sign] to [black]" in prompt


def test_last_final_wins_and_missing_final_is_unscored():
    jd, _ = ga(session(CU, "cu"), 1, "If it failed I would say FINAL: no. Round 1: yes\nFINAL: yes")
    assert jd.score == 1.0
    jd, _ = ga(session(CU, "cu"), 1, "Round 1: yes\nRound 2: yes")
    assert jd.status == ScoreStatus.unscored and "FINAL" in jd.reason and jd.raw.startswith("Round 1")
    jd, _ = ga(session(CU, "cu"), 1, FakeVLM("Round 1: yes\nRound 2: the sign lo", finish_reason="length"))
    assert jd.status == ScoreStatus.unscored and "cut off" in jd.reason


def test_votes_and_image_limit():
    answers = {0: "FINAL: yes", 1: "FINAL: no", 2: "FINAL: yes", 3: "FINAL: yes"}
    jd, _ = ga(session(CU, "cu"), 1, FakeVLM(lambda p, i, v: answers[v]), votes=4)
    assert jd.votes == (1.0, 0.0, 1.0, 1.0) and jd.score == 0.75
    jd, vlm = ga(session(CM, "cm"), 2, "FINAL: yes", ga_max_images=3)
    assert jd.status == ScoreStatus.unscored and "at most ga_max_images=3" in jd.reason and not ga_calls(vlm)


def test_variant_auto_from_rule_and_cm_without_rule_is_unscored():
    jd, vlm = ga(session(CM, ""), 0, "FINAL: yes")  # no subset: the turn-1 rule makes it cm
    assert RULE in ga_calls(vlm)[0][0]
    jd, _ = ga(session(CU, "cu"), 0, "FINAL: yes", ga_variant="cm")
    assert jd.status == ScoreStatus.unscored and "rule" in jd.reason
