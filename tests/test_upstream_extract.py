"""Reading the authors' prompt texts with ast from a stand-in checkout: extraction, pins, refusals."""

from __future__ import annotations

import sys

import pytest
from upstream_fixtures import write_fake_editr2

from micebench import upstream
from micebench.errors import SetupError
from micebench.upstream import EDIT_R2_COMMIT, ITEMS, PINS, UpstreamCheckout, ic_cot_texts, judge_texts


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "Edit-R2"
    return root, write_fake_editr2(root)


def test_constants_and_expressions_are_read_without_importing(fake):
    root, pins = fake
    before = set(sys.modules)
    t = judge_texts(root, pins)
    assert not {m for m in set(sys.modules) - before if "not_installed" in m}
    assert t.add_check("Add [cat]") == "PH-ADD-CHECK <Add [cat]>\nanswer yes/no"
    assert t.replace_check("Replace [a] with [b]") == "PH-REPLACE-CHECK <Replace [a] with [b]>"
    # the f-string the color branch hands to the VLM, not the unused module constant
    assert t.color("mug", "red") == "PH-COLOR is mug now red?"
    assert t.material("mug", "glass") == "PH-MATERIAL is mug made of glass?"
    assert t.text_read() == "PH-READ-ALL-TEXT"
    assert t.background("beach") == "PH-BACKGROUND [beach]?"
    assert t.ga("cm", ["a", "b"], ["[a]", "[b]"]) == (
        "PH-GA-CM header\nPH-ROUND 1 :: a\nPH-ROUND 2 :: b\nPH-GA-CM footer"
    )
    assert t.ga("cu", ["a", "b"], ["[a]", "[b]"]) == (
        "PH-GA-CU header\nPH-ROUND 1 :: a || [a]\nPH-ROUND 2 :: b || [b]\nPH-GA-CU footer"
    )


def test_the_question_function_is_compiled_alone_with_its_strip(fake):
    """The method is compiled in an empty namespace (its List annotation would fail there) and called with
    a stand-in self; the authors' .strip() of history and current prompts is part of it."""
    root, pins = fake
    t = ic_cot_texts(root, pins)
    assert t.system_prompt == "PH-THINK-FIRST <think> ... </think>"
    got = t.question(["  add a cat ", "move it"], " make it red\n", "cu")
    assert got == "PH-CU|PH-H1: add a cat\nPH-H2: move it|make it red|"
    assert t.question(["x"], "y", "cm").startswith("PH-CM|")
    assert t.question(["x"], "y", "generic").startswith("PH-GENERIC|")


def test_hashes_are_of_the_values_and_a_change_is_refused_naming_the_commit(fake):
    root, pins = fake
    assert pins["if_text"] == upstream.sha256_text("PH-READ-ALL-TEXT")
    assert set(pins) == set(ITEMS) and len(set(pins.values())) == len(pins)  # every item found, all distinct
    server = root / "rewards/reward_server/edival_reward_server.py"
    server.write_text(server.read_text().replace("PH-READ-ALL-TEXT", "PH-READ-ALL-TEXT!"))
    with pytest.raises(SetupError) as e:
        judge_texts(root, pins)
    msg = str(e.value)
    assert "VLM_TEXT_PROMPT" in msg and EDIT_R2_COMMIT in msg and "\n" not in msg
    ic_cot_texts(root, pins)  # the editor's texts live in another file and are still fine


def test_the_real_pins_refuse_a_checkout_that_is_not_the_pinned_commit(fake):
    root, _ = fake
    with pytest.raises(SetupError, match=f"differs from that commit.*{EDIT_R2_COMMIT}"):
        judge_texts(root)  # default pins: the authors' commit
    with pytest.raises(SetupError, match=EDIT_R2_COMMIT):
        ic_cot_texts(root, PINS)


def test_missing_files_items_and_folders_are_one_line_setup_errors(fake, tmp_path):
    root, pins = fake
    with pytest.raises(SetupError, match="not a directory"):
        judge_texts(tmp_path / "nowhere", pins)
    (root / "flow_grpo/edival_client.py").unlink()
    with pytest.raises(SetupError, match=r"flow_grpo/edival_client.py not found.*" + EDIT_R2_COMMIT):
        judge_texts(root, pins)
    inf = root / "flow_grpo/bagel/inferencer.py"
    inf.write_text(inf.read_text().replace("_build_pe_question", "_build_question"))
    with pytest.raises(SetupError, match="InterleaveInferencer._build_pe_question not found"):
        ic_cot_texts(root, pins)


def test_an_expression_must_use_exactly_the_expected_names(fake):
    """A pinned hash already guards this; the name check keeps a wrong pin from running unknown code."""
    root, _ = fake
    client = root / "flow_grpo/edival_client.py"
    client.write_text(client.read_text().replace("{instr}\" for i, instr", "{instr}{secret}\" for i, instr"))
    pins = UpstreamCheckout(root, pins={}).pins_found()
    with pytest.raises(SetupError, match="uses names"):
        judge_texts(root, pins)


def test_resolve_repo_prefers_the_option_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    assert upstream.resolve_repo(None) is None
    monkeypatch.setenv(upstream.ENV_VAR, str(tmp_path))
    assert upstream.resolve_repo(None) == tmp_path
    assert upstream.resolve_repo("/elsewhere") == upstream.Path("/elsewhere")
