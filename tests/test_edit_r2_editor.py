"""The edit-r2 / bagel editors end to end on the tiny random checkpoint (CPU, 64x64, 2 steps)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from edit_r2_tiny import build_tiny_checkpoint, one_torch_thread  # noqa: E402
from PIL import Image  # noqa: E402

from micebench.editors import create_editor  # noqa: E402
from micebench.editors.edit_r2 import editor as editor_mod  # noqa: E402
from micebench.editors.edit_r2 import generation  # noqa: E402
from micebench.options import OptionsError  # noqa: E402
from micebench.spec import EditRequest, Session, Turn  # noqa: E402

INSTRUCTIONS = ("add a red hat to the cat", "make it blue")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bagel_tiny"))


def options(ckpt, **kw):
    base = {"weights": str(ckpt), "resolution": 64, "steps": 2, "max_think_tokens": 12, "device": "cpu", "seed": 7}
    return {**base, **kw}




def session(subset="cu", sid="s1", n_turns=2):
    turns = (
        Turn(instruction=INSTRUCTIONS[0], task_type="subject_add"),
        Turn(instruction=INSTRUCTIONS[1], task_type="color_alter"),
    )
    turns = turns[:n_turns]
    return Session(id=sid, suite="tiny", subset=subset, source_image="/nowhere/src.png", turns=turns)


SOURCE = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8))


def request(sess, k, outputs=(), effective=()):
    return EditRequest(
        session=sess,
        turn_index=k,
        source_image=SOURCE,
        history_instructions=INSTRUCTIONS[:k],
        history_effective=tuple(effective),
        history_images=tuple(outputs),
        instruction=INSTRUCTIONS[k],
    )


def run_session(editor, sess):
    r1 = editor.edit([request(sess, 0)])[0]
    assert r1.error is None, r1.error
    r2 = editor.edit([request(sess, 1, [r1.image], [r1.effective_instruction])])[0]
    assert r2.error is None, r2.error
    return r1, r2


@pytest.fixture(scope="module")
def first_run(ckpt):
    editor = create_editor("edit-r2", options(ckpt))
    return editor, run_session(editor, session())


def test_two_turn_session_end_to_end(first_run):
    editor, (r1, r2) = first_run
    for r in (r1, r2):
        assert isinstance(r.image, Image.Image) and r.image.size == (64, 64) and r.image.mode == "RGB"
        assert np.asarray(r.image).std() > 0  # not a constant image
    assert r1.effective_instruction == INSTRUCTIONS[0]
    assert "ic_cot_trace" not in r1.extra  # IC-CoT runs from turn 2 on
    assert r2.extra["ic_cot_mode"] == "cu"  # chosen from the session's subset
    assert "context_rebuilt" not in r2.extra  # the carried context was used
    assert editor._sessions == {}  # dropped after the session's last turn
    assert not np.array_equal(np.asarray(r1.image), np.asarray(r2.image))


def test_ic_cot_decodes_tokens_and_falls_back_on_random_output(first_run):
    _, (_, r2) = first_run
    trace = r2.extra["ic_cot_trace"]
    # the tiny random model never emits <|im_end|> early: the whole budget is decoded
    assert r2.extra["ic_cot_tokens"] == 11  # max_think_tokens 12 counts the BOS
    assert isinstance(trace, str) and trace.strip()
    # ...and never writes "<think> ... </think> answer": the original instruction is kept, and said so
    assert r2.extra["ic_cot_fallback"] is True
    assert r2.extra["ic_cot_fallback_reason"] == "no closing </think> tag"
    assert r2.effective_instruction == INSTRUCTIONS[1]


def test_greedy_decode_loop(first_run, monkeypatch):
    """BOS first, one cached token per step at consecutive positions, argmax, stop at <|im_end|> (not emitted)."""
    editor, _ = first_run
    engine = editor.engine
    from micebench.editors.edit_r2.context import Context

    ctx = engine.add_text(Context(), "hello")
    words = engine.tok.encode("<think> the hat </think> make the hat blue")
    script = [*words, engine.tok.eos_id, *words]
    vocab = engine.cfg.llm.vocab_size
    steps = {"n": 0, "positions": [], "past_len": []}

    class ScriptedHead(torch.nn.Module):
        def forward(self, h):
            logits = torch.zeros(h.shape[0], vocab)
            logits[:, script[steps["n"]]] = 1.0
            steps["n"] += 1
            return logits

    real_forward = engine.llm.forward_chunk

    def spy(embeds, positions, past, causal, gen_span=None):
        steps["positions"].append(int(positions[0]))
        steps["past_len"].append(past.n)
        return real_forward(embeds, positions, past, causal, gen_span)

    monkeypatch.setattr(engine.llm, "lm_head", ScriptedHead())
    monkeypatch.setattr(engine.llm, "forward_chunk", spy)
    text, n = generation.greedy_decode(engine, ctx, 300)
    assert text == engine.tok.decode(words) and n == len(words)
    assert steps["positions"] == list(range(ctx.rope, ctx.rope + len(words) + 1))
    assert steps["past_len"] == list(range(ctx.kv_len, ctx.kv_len + len(words) + 1))
    assert generation.extract_instruction(text, "orig") == ("make the hat blue", None)
    steps.update(n=0, positions=[], past_len=[])
    _, n_short = generation.greedy_decode(engine, ctx, 4)  # the budget counts the BOS
    assert n_short == 3


def test_same_seed_same_images_other_seed_differs(ckpt, first_run):
    _, (r1, r2) = first_run
    again = create_editor("edit-r2", options(ckpt))
    a1, a2 = run_session(again, session())
    assert np.array_equal(np.asarray(a1.image), np.asarray(r1.image))
    assert np.array_equal(np.asarray(a2.image), np.asarray(r2.image))
    other = create_editor("edit-r2", options(ckpt, seed=8)).edit([request(session(n_turns=1), 0)])[0]
    assert not np.array_equal(np.asarray(other.image), np.asarray(r1.image))


def test_resume_rebuilds_the_same_context(ckpt, first_run):
    """A fresh editor that only sees turn 2 (e.g. after a resume) rebuilds the context from the history."""
    _, (r1, r2) = first_run
    fresh = create_editor("edit-r2", options(ckpt))
    out = fresh.edit([request(session(), 1, [r1.image], [r1.effective_instruction])])[0]
    assert out.extra["context_rebuilt"] is True
    assert np.array_equal(np.asarray(out.image), np.asarray(r2.image))


def test_rewrite_is_used_for_the_turn(ckpt, first_run, monkeypatch):
    """When IC-CoT closes its think tag, the text after it becomes the turn's instruction."""
    _, (r1, r2) = first_run
    seen = {}

    def fake_decode(engine, ctx, max_length):
        seen["max_length"] = max_length
        return "<think> it is the hat </think> make the red hat blue", 9

    monkeypatch.setattr(generation, "greedy_decode", fake_decode)
    ed = create_editor("edit-r2", options(ckpt, ic_cot="generic"))
    out = ed.edit([request(session(), 1, [r1.image], [r1.effective_instruction])])[0]
    assert out.effective_instruction == "make the red hat blue"
    assert out.extra["ic_cot_fallback"] is False and out.extra["ic_cot_fallback_reason"] is None
    assert out.extra["ic_cot_mode"] == "generic" and seen["max_length"] == 12
    plain = create_editor("edit-r2", options(ckpt, ic_cot="off"))
    base = plain.edit([request(session(), 1, [r1.image], [r1.effective_instruction])])[0]
    assert not np.array_equal(np.asarray(out.image), np.asarray(base.image))  # another instruction, another image


def test_bagel_baseline_runs_without_ic_cot(ckpt, first_run):
    _, (r1, _) = first_run
    ed = create_editor("bagel", options(ckpt))
    assert ed.config.ic_cot == "off" and ed.config.rope_inv_freq_dtype == "float32"
    out = ed.edit([request(session(), 1, [r1.image], [r1.effective_instruction])])[0]
    assert out.error is None and out.effective_instruction == INSTRUCTIONS[1]
    assert "ic_cot_trace" not in out.extra


def test_default_context_size(ckpt):
    """BAGEL's context rule raises a 64 px source to 512 px; ``context_min_side`` lowers that (quick CPU runs)."""
    ed = create_editor("edit-r2", options(ckpt, context_min_side=64))
    out = ed.edit([request(session(n_turns=1), 0)])[0]
    assert out.error is None and out.image.size == (64, 64)
    assert ed.engine.vae_resize == (1024, 64, 16)
    assert create_editor("edit-r2", {}).config.context_min_side == 512


def test_a_failing_turn_becomes_an_error_row(ckpt, monkeypatch):
    ed = create_editor("edit-r2", options(ckpt, context_min_side=64))
    engine = ed.engine

    def boom(ctx, text):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine, "add_text", boom)
    out = ed.edit([request(session(sid="x"), 0)])
    assert len(out) == 1 and out[0].image is None and "out of memory" in out[0].error
    assert "x" not in ed._sessions
    ed.close()
    assert ed._engine is None


def test_describe_records_the_prompt_hash():
    a = create_editor("edit-r2", {}).describe()
    b = create_editor("edit-r2", {"ic_cot_system_prompt": "think, then answer"}).describe()
    assert a["name"] == "edit-r2" and a["config"]["cfg_renorm"] == "text_channel"
    assert len(a["ic_cot_prompt_sha256"]) == 16 and a["ic_cot_prompt_sha256"] != b["ic_cot_prompt_sha256"]


def test_options_are_validated():
    with pytest.raises(OptionsError, match="resolution"):
        create_editor("edit-r2", {"resolution": 100})
    with pytest.raises(OptionsError, match="cfg_renorm"):
        create_editor("edit-r2", {"cfg_renorm": "bogus"})
    with pytest.raises(OptionsError, match="known options"):
        create_editor("edit-r2", {"not_an_option": 1})


def test_missing_weights_fail_the_batch_with_a_clear_error(tmp_path):
    from micebench.editors.edit_r2.config import CheckpointError

    ed = create_editor("edit-r2", {"weights": str(tmp_path / "absent"), "device": "cpu"})
    with pytest.raises(CheckpointError, match="absent"):
        ed.edit([request(session(), 0)])

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


def test_session_cache_is_bounded(ckpt, monkeypatch):
    ed = create_editor("edit-r2", options(ckpt, max_cached_sessions=1))
    ed.edit([request(session(sid="a"), 0), request(session(sid="b"), 0)])
    assert list(ed._sessions) == ["b"]
    assert editor_mod.turn_seed(7, "a", 0) != editor_mod.turn_seed(7, "b", 0)
