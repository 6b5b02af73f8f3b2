"""How single-turn editors see a session: chain, concat, multi-image, and ic-cot against a fake
OpenAI-compatible server on 127.0.0.1 (and a tiny local Qwen2.5-VL)."""

from __future__ import annotations

import base64
import io
import json
import sqlite3

import pandas as pd
import pytest
from editor_fixtures import ChatScript, request, same_pixels, suite
from PIL import Image

from micebench.editors.context import ContextOptions, SessionContext, turn_seed
from micebench.errors import SetupError


def ctx(**opts) -> SessionContext:
    return SessionContext(ContextOptions(**opts), editor="test")


def test_chain_edits_the_previous_output_with_the_current_instruction():
    r = request(2)
    p = ctx().plan([r])[0]
    assert p.instruction == r.instruction and p.error is None
    assert len(p.images) == 1 and same_pixels(p.images[0], r.history_images[-1]) and p.roles == ("turn 2",)
    first = ctx().plan([request(0)])[0]
    assert same_pixels(first.images[0], request(0).source_image) and first.roles == ("source",)


def test_concat_edits_the_source_with_every_instruction_so_far():
    r = request(2)
    p = ctx(context="concat").plan([r])[0]
    assert p.instruction == "Add a red hat to the cat. Make it blue. Remove the sofa but keep the hat."
    assert same_pixels(p.images[0], r.source_image) and p.extra["context"] == "concat"
    p = ctx(context="concat", concat_separator=" | ").plan([request(1)])[0]
    assert p.instruction == "Add a red hat to the cat. | Make it blue."


def test_multi_image_sends_source_and_latest_outputs_up_to_max_images():
    r = request(2)
    p = ctx(context="multi-image").plan([r])[0]
    assert p.roles == ("source", "turn 1", "turn 2") and p.instruction == r.instruction
    assert all(same_pixels(a, b) for a, b in zip(p.images, (r.source_image, *r.history_images), strict=True))
    p = ctx(context="multi-image", max_images=2).plan([r])[0]
    assert p.roles == ("source", "turn 2")
    assert same_pixels(p.images[0], r.source_image) and same_pixels(p.images[1], r.history_images[1])


def test_turn_seed_depends_on_seed_session_and_turn_only():
    assert turn_seed(0, "a", 1) == turn_seed(0, "a", 1)
    assert len({turn_seed(0, "a", 1), turn_seed(1, "a", 1), turn_seed(0, "b", 1), turn_seed(0, "a", 2)}) == 4


# -- ic-cot ---------------------------------------------------------------------------------------
def ic_cot(server, **opts) -> SessionContext:
    base = {"vlm_base_url": server.url_for("/v1"), "vlm_model": "rewriter", "vlm_max_retries": 1, "vlm_timeout_s": 5}
    return ctx(context="ic-cot", **{**base, **opts})


def test_ic_cot_sends_exactly_our_prompt_and_uses_the_reply(server, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("H:{history}|I:{instruction}|N:{images_note}")
    script = ChatScript(lambda prompt: '  "Make the red hat blue, keep the cat"\n')
    server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(script)
    c = ic_cot(server, ic_cot_template=str(template))
    plans = c.plan([request(0, "a"), request(1, "b")])
    assert len(script.bodies) == 1  # turn 1 has nothing to reconstruct: no call
    body = script.bodies[0]
    assert body["model"] == "rewriter" and body["temperature"] == 0.0 and body["max_tokens"] == 512
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "H:1. Add a red hat to the cat|I:Make it blue|N:"}]}]  # fmt: skip
    assert plans[0].instruction == "Add a red hat to the cat" and "skipped" in plans[0].extra["ic_cot"]
    p = plans[1]
    assert p.error is None and p.instruction == "Make the red hat blue, keep the cat"
    rec = p.extra["ic_cot"]
    assert rec["reply"] == '  "Make the red hat blue, keep the cat"\n' and rec["model"] == "rewriter"
    assert rec["prompt_sha256"] == c.prompt_sha256 and rec["instruction"] == p.instruction


def test_ic_cot_builtin_prompt_and_images(server):
    script = ChatScript("Remove the sofa; the cat keeps its blue hat")
    server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(script)
    r = request(2)
    ic_cot(server, vlm_images="all").plan([r])
    content = script.bodies[0]["messages"][0]["content"]
    assert [x["type"] for x in content] == ["image_url"] * 3 + ["text"]
    sent = [Image.open(io.BytesIO(base64.b64decode(x["image_url"]["url"].split(",", 1)[1]))) for x in content[:3]]
    assert all(same_pixels(a, b) for a, b in zip(sent, (r.source_image, *r.history_images), strict=True))
    text = content[-1]["text"]
    assert "1. Add a red hat to the cat\n2. Make it blue" in text
    assert "exactly as the user wrote it:\nRemove the sofa but keep the hat" in text
    assert "original, then the result of each step" in text
    script.bodies.clear()
    ic_cot(server, vlm_images="latest").plan([r])
    content = script.bodies[0]["messages"][0]["content"]
    assert [x["type"] for x in content] == ["image_url", "text"]


@pytest.mark.parametrize("status, answer, finish, why", [
    (500, "", "stop", "no instruction"),
    (400, "", "stop", "no instruction"),
    (200, "   ", "stop", "empty instruction"),
    (200, "Make the hat", "length", "cut off"),
])  # fmt: skip
def test_a_failing_vlm_gives_an_error_not_the_raw_instruction(server, status, answer, finish, why):
    script = ChatScript(answer, status=status, finish=finish)
    server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(script)
    p = ic_cot(server, vlm_max_retries=0).plan([request(1)])[0]
    assert p.error is not None and why in p.error and p.error.startswith("ic-cot:")
    assert p.extra["ic_cot"]["model"] == "rewriter"


def test_ic_cot_setup_errors_before_any_work(monkeypatch, tmp_path):
    monkeypatch.delenv("MICEBENCH_VLM_BASE_URL", raising=False)
    with pytest.raises(SetupError, match="MICEBENCH_VLM_BASE_URL"):
        ctx(context="ic-cot", vlm_model="m").check()
    monkeypatch.setenv("MICEBENCH_VLM_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(SetupError, match="vlm_model"):
        ctx(context="ic-cot").check()
    ctx(context="ic-cot", vlm_model="m").check()  # the URL from the environment is enough
    with pytest.raises(SetupError, match="vlm_path"):
        ctx(context="ic-cot", vlm_backend="transformers").check()
    bad = tmp_path / "t.txt"
    bad.write_text("no placeholders")
    with pytest.raises(SetupError, match=r"lacks \{history\} and \{instruction\}"):
        ctx(context="ic-cot", vlm_model="m", ic_cot_template=str(bad)).check()


def test_ic_cot_end_to_end_through_the_diffusers_editor(server, tmp_path, tiny_ip2p):
    """A 2-turn run: turn 2's effective instruction is the VLM's; a failing VLM makes turn 2 an error."""
    from micebench.evaluate import start_run
    from micebench.runner import RunSettings

    def rewrite(prompt: str) -> str:
        return "Rewritten: " + prompt.split("exactly as the user wrote it:\n")[1].split("\n")[0]

    script = ChatScript(rewrite)
    server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(script)
    data = suite(tmp_path / "suite", n_sessions=2, n_turns=2)
    opts = {"model": tiny_ip2p, "steps": 2, "context": "ic-cot", "vlm_base_url": server.url_for("/v1"),
            "vlm_model": "rewriter", "vlm_max_retries": 0}  # fmt: skip
    res = start_run(data, "diffusers", opts, [], out=tmp_path / "runs", run_name="ok",
                    settings=RunSettings(batch_size=2, progress=False))
    df = pd.read_parquet(res.run_dir / "turns.parquet").set_index(["session_id", "turn"])
    assert (df.status == "ok").all()
    for sid in ("s0", "s1"):
        assert df.loc[(sid, 1)].effective_instruction == df.loc[(sid, 1)].instruction
        assert df.loc[(sid, 2)].effective_instruction == "Rewritten: " + df.loc[(sid, 2)].instruction
    with sqlite3.connect(res.run_dir / "run.sqlite") as db:
        extra = json.loads(db.execute("SELECT extra FROM turns WHERE session_id='s0' AND turn=1").fetchone()[0])
    assert extra["ic_cot"]["reply"].startswith("Rewritten: ") and extra["ic_cot"]["model"] == "rewriter"
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["editor"]["describe"]["ic_cot_prompt_sha256"] == extra["ic_cot"]["prompt_sha256"]

    server.clear()
    server.expect_request("/v1/chat/completions", method="POST").respond_with_data("down", status=503)
    res = start_run(data, "diffusers", opts, [], out=tmp_path / "runs", run_name="down",
                    settings=RunSettings(batch_size=2, progress=False))
    df = pd.read_parquet(res.run_dir / "turns.parquet").set_index(["session_id", "turn"])
    assert (df.xs(1, level="turn").status == "ok").all()
    bad = df.xs(2, level="turn")
    assert (bad.status == "error").all() and bad.error.str.startswith("ic-cot:").all()
    assert (bad.output_hash == "").all()


def test_ic_cot_with_a_local_transformers_vlm(tmp_path):
    """vlm_backend=transformers: a tiny random Qwen2.5-VL writes the instruction; whatever it says is
    what the editor is told, and it is recorded (or, if it says nothing usable, an error)."""
    from judge_fixtures import save_tiny_qwen25vl

    path = save_tiny_qwen25vl(tmp_path / "qwen")
    c = ctx(context="ic-cot", vlm_backend="transformers", vlm_path=str(path), vlm_device="cpu", vlm_max_tokens=8)
    p = c.plan([request(1)])[0]
    rec = p.extra["ic_cot"]
    assert rec["model"] == str(path) and "reply" in rec
    if p.error is None:
        assert p.instruction == rec["instruction"] and p.instruction.strip()
    else:
        assert p.error.startswith("ic-cot:")


@pytest.fixture(scope="module")
def tiny_ip2p(tmp_path_factory):
    import torch
    from diffusers_tiny import build_instruct_pix2pix

    pytest.importorskip("diffusers")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_editors_diffusers: threads only wait on each other here
    yield str(build_instruct_pix2pix(tmp_path_factory.mktemp("ip2p") / "ip2p"))
    torch.set_num_threads(before)


def test_ic_cot_preflight_checks_the_server_before_any_work(server, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(SetupError, match="cannot be reached"):
        ctx(context="ic-cot", vlm_base_url=closed, vlm_model="m").preflight()
    ctx(context="ic-cot", vlm_base_url=server.url_for("/v1"), vlm_model="m").preflight()  # answers (404): there
    server.expect_request("/v1/models").respond_with_data("no", status=401)
    monkeypatch.setenv("MICEBENCH_VLM_API_KEY", "wrong")
    with pytest.raises(SetupError, match=r"refused the key \(HTTP 401\); check \$MICEBENCH_VLM_API_KEY"):
        ctx(context="ic-cot", vlm_base_url=server.url_for("/v1"), vlm_model="m").preflight()
    assert server.log[-1][0].headers["Authorization"] == "Bearer wrong"
    ctx(context="chain", vlm_base_url=closed).preflight()  # no VLM needed, none checked
