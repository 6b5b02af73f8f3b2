"""The command editor with a small Python script: success, response files, non-zero exit, and a
timeout that kills the whole process group (the script's own child included)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from editor_fixtures import request, same_pixels, suite
from PIL import Image, ImageOps

from micebench.editors.base import create_editor
from micebench.errors import SetupError
from micebench.options import OptionsError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")

SCRIPT = r'''
import json, os, subprocess, sys, time
from PIL import Image, ImageOps
req = json.load(open(sys.argv[-1]))
mode = os.environ.get("MODE", "invert")
with open(os.environ.get("LOG", os.devnull), "a") as log:
    log.write(json.dumps(req) + "\n")
if mode == "fail":
    print("model crashed: CUDA error", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(os.environ["PIDS"], "w").write(f"{os.getpid()} {child.pid}")
    time.sleep(120)
answers = []
for item in req["items"]:
    if mode == "respond" and "Make it blue" in item["prompt"]:
        answers.append({"id": item["id"], "error": "cannot do blue"})
        continue
    img = ImageOps.invert(Image.open(item["images"][-1]).convert("RGB"))
    if mode == "respond":
        img.save(os.path.join(os.path.dirname(req["response"]), f"mine_{item['id']}.png"))
        answers.append({"id": item["id"], "image": f"mine_{item['id']}.png",
                        "effective_instruction": "inverted: " + item["prompt"], "extra": {"gpu": "none"}})
    else:
        img.save(item["output"])
if mode == "respond":
    json.dump({"items": answers}, open(req["response"], "w"))
'''


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "edit.py"
    path.write_text(SCRIPT)
    return path


def editor(script: Path, tmp_path: Path, mode: str = "invert", **opts):
    env = {"MODE": mode, "LOG": str(tmp_path / "log.jsonl"), "PIDS": str(tmp_path / "pids")}
    return create_editor("command", {"command": [sys.executable, str(script)], "env": env, **opts})


def logged(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def test_success_writes_outputs_and_the_request_carries_the_history(script, tmp_path):
    reqs = [request(0, "a"), request(2, "b")]
    out = editor(script, tmp_path).edit(reqs)
    assert [r.error for r in out] == [None, None]
    for r, res in zip(reqs, out, strict=True):
        assert same_pixels(res.image, ImageOps.invert(r.previous_image))
        assert res.effective_instruction == r.instruction
    (call,) = logged(tmp_path)  # one call for the batch
    a, b = call["items"]
    assert (a["session_id"], a["turn"], b["session_id"], b["turn"]) == ("a", 1, "b", 3)
    assert b["instruction"] == reqs[1].instruction and b["prompt"] == reqs[1].instruction
    assert [h["instruction"] for h in b["history"]] == list(reqs[1].history_instructions)
    assert b["image_roles"] == ["turn 2"] and b["images"] == [b["history"][1]["image"]]
    assert isinstance(b["seed"], int) and b["context"] == "chain"
    assert not Path(call["response"]).parent.exists()  # the call's folder is removed afterwards


def test_concat_context_reaches_the_command(script, tmp_path):
    r = request(1)
    res = editor(script, tmp_path, context="concat").edit([r])[0]
    item = logged(tmp_path)[0]["items"][0]
    assert item["prompt"] == "Add a red hat to the cat. Make it blue." and item["image_roles"] == ["source"]
    assert same_pixels(res.image, ImageOps.invert(r.source_image))
    assert res.effective_instruction == item["prompt"]


def test_response_file_paths_errors_and_extra(script, tmp_path):
    reqs = [request(0, "a"), request(1, "b")]  # b's instruction is "Make it blue": the script refuses it
    out = editor(script, tmp_path, mode="respond").edit(reqs)
    assert out[0].error is None and out[0].effective_instruction == "inverted: " + reqs[0].instruction
    assert out[0].extra["command"] == {"gpu": "none"}
    assert out[1].error == "command: cannot do blue"


def test_nonzero_exit_fails_every_turn_of_the_call_with_stderr(script, tmp_path):
    out = editor(script, tmp_path, mode="fail").edit([request(0, "a"), request(0, "b")])
    for r in out:
        assert r.error is not None and "exited with status 3" in r.error and "CUDA error" in r.error


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead


def test_timeout_kills_the_process_group(script, tmp_path):
    ed = editor(script, tmp_path, mode="hang", timeout_s=1.5, kill_grace_s=0.2)
    start = time.monotonic()
    out = ed.edit([request(0)])
    assert time.monotonic() - start < 10
    assert out[0].error is not None and "timed out after 1.5 s" in out[0].error and "killed" in out[0].error
    leader, child = map(int, (tmp_path / "pids").read_text().split())
    deadline = time.monotonic() + 5
    while not (_dead(leader) and _dead(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(leader) and _dead(child)


def test_a_whole_run_through_the_command(script, tmp_path):
    from micebench.evaluate import start_run
    from micebench.runner import RunSettings

    data = suite(tmp_path / "suite", n_sessions=2, n_turns=2)
    opts = {"command": f"{sys.executable} {script}", "env": {"MODE": "invert"}}
    res = start_run(data, "command", opts, [("pixel", {})], out=tmp_path / "runs", run_name="r",
                    settings=RunSettings(batch_size=2, progress=False))  # fmt: skip
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert (df.status == "ok").all()
    # two inversions give the source back
    src = np.asarray(Image.open(data.sessions[0].source_image).convert("RGB"))
    turn2 = df[(df.session_id == "s0") & (df.turn == 2)].output_hash.item()
    assert np.array_equal(np.asarray(Image.open(res.run_dir / "images" / f"{turn2}.png").convert("RGB")), src)


def test_setup_errors(tmp_path):
    with pytest.raises(SetupError, match="not an executable"):
        create_editor("command", {"command": "/no/such/program --flag"}).preflight()
    with pytest.raises(OptionsError, match="command is empty"):
        create_editor("command", {"command": []})
    with pytest.raises(SetupError, match="cwd"):
        create_editor("command", {"command": [sys.executable], "cwd": str(tmp_path / "nope")}).preflight()


def test_placeholder_and_keep_files(script, tmp_path):
    ed = create_editor("command", {"command": [sys.executable, str(script), "{request}", "--extra-flag"],
                                   "keep_files": True, "work_dir": str(tmp_path / "work")})  # fmt: skip
    # The script reads sys.argv[-1]: with the placeholder the request is not last, so it fails...
    res = ed.edit([request(0)])[0]
    assert res.error is not None and "exited with status" in res.error
    kept = res.extra["command_folder"]
    assert Path(kept, "request.json").is_file() and Path(kept).parent == tmp_path / "work"
