"""edit-r2's IC-CoT texts: the authors' (read from a stand-in checkout) when given, else the paraphrase, said loudly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from edit_r2_tiny import build_tiny_checkpoint, one_torch_thread  # noqa: E402
from test_edit_r2_editor import INSTRUCTIONS, options, request, session  # noqa: E402
from upstream_fixtures import write_fake_editr2  # noqa: E402

from micebench import upstream  # noqa: E402
from micebench.editors import create_editor  # noqa: E402
from micebench.editors.edit_r2 import generation  # noqa: E402
from micebench.editors.edit_r2.editor import EditR2Config  # noqa: E402
from micebench.editors.edit_r2.prompts import PARAPHRASE_NOTE, THINK_SYSTEM_PROMPT, rewrite_request  # noqa: E402
from micebench.errors import SetupError  # noqa: E402
from micebench.options import build_config  # noqa: E402

_threads = pytest.fixture(autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bagel_tiny_upstream"))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "Edit-R2"
    monkeypatch.setattr(upstream, "PINS", write_fake_editr2(root))
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    return root


def texts_sent(editor, monkeypatch):
    """Run turn 2 with decoding faked; return every text appended to a context, in order."""
    sent = []
    engine = editor.engine
    real = engine.add_text

    def add_text(ctx, text):
        sent.append(text)
        return real(ctx, text)

    monkeypatch.setattr(engine, "add_text", add_text)
    monkeypatch.setattr(generation, "greedy_decode", lambda e, c, n: ("<think> the hat </think> make the hat blue", 9))
    out = editor.edit([request(session(), 1, [request(session(), 0).source_image], [INSTRUCTIONS[0]])])[0]
    assert out.error is None, out.error
    return sent, out


def test_the_authors_text_is_sent_when_a_checkout_is_given(ckpt, repo, monkeypatch):
    ed = create_editor("edit-r2", options(ckpt, upstream_repo=str(repo), context_min_side=64))
    sent, out = texts_sent(ed, monkeypatch)
    assert "PH-THINK-FIRST <think> ... </think>" in sent
    assert f"PH-CU|PH-H1: {INSTRUCTIONS[0]}|{INSTRUCTIONS[1]}|" in sent  # cu from the session's subset
    assert out.effective_instruction == "make the hat blue"
    d = ed.describe()
    assert d["ic_cot_text"] == "upstream" and d["ic_cot_upstream_commit"] == upstream.EDIT_R2_COMMIT
    assert "ic_cot_text_note" not in d


def test_the_environment_variable_gives_the_checkout_too(ckpt, repo, monkeypatch):
    monkeypatch.setenv(upstream.ENV_VAR, str(repo))
    assert create_editor("edit-r2", options(ckpt)).describe()["ic_cot_text"] == "upstream"


def test_without_a_checkout_the_paraphrase_is_used_and_said(ckpt, monkeypatch):
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    with pytest.warns(UserWarning, match="paraphrase"):
        ed = create_editor("edit-r2", options(ckpt, context_min_side=64))
    sent, _ = texts_sent(ed, monkeypatch)
    assert THINK_SYSTEM_PROMPT in sent and rewrite_request([INSTRUCTIONS[0]], INSTRUCTIONS[1], "cu") in sent
    d = ed.describe()
    assert d["ic_cot_text"] == "paraphrase" and d["ic_cot_text_note"] == PARAPHRASE_NOTE
    assert create_editor("bagel", options(ckpt)).describe()["ic_cot_text"] == "off"


def test_a_wrong_checkout_stops_when_the_options_are_read(repo, tmp_path, monkeypatch):
    with pytest.raises(SetupError, match=upstream.EDIT_R2_COMMIT):
        build_config(EditR2Config, {"upstream_repo": str(tmp_path / "nowhere")}, "editor 'edit-r2'")
    monkeypatch.setattr(upstream, "PINS", {k: "0" * 64 for k in upstream.PINS})
    with pytest.raises(SetupError, match="differs from that commit"):
        build_config(EditR2Config, {"upstream_repo": str(repo)}, "editor 'edit-r2'")
    build_config(EditR2Config, {"upstream_repo": str(repo), "ic_cot": "off"}, "editor 'edit-r2'")  # not used: fine
