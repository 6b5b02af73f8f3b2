"""The issue's command end to end through the CLI, on tiny random models and a stand-in checkout:

    micebench run --suite mice -S root=CHECKOUT --model ... --judge mice -J profile=judges/mice-upstream.yaml
                  -J upstream_repo=CHECKOUT

The VLM is a real HTTP server on 127.0.0.1 that records each prompt; the detector is a tiny random
GroundingDINO and DINOv3 a tiny random timm model, both loaded by path.
"""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from click.testing import CliRunner  # noqa: E402
from judge_fixtures import save_tiny_grounding_dino  # noqa: E402
from pytest_httpserver import HTTPServer  # noqa: E402
from test_features_timm import save_tiny_timm_dinov3  # noqa: E402
from test_suite_mice_upstream import write_subsets  # noqa: E402
from upstream_fixtures import write_fake_editr2  # noqa: E402
from werkzeug import Request, Response  # noqa: E402

from micebench import upstream  # noqa: E402
from micebench.cli import main  # noqa: E402
from micebench.store import RunStore  # noqa: E402


@pytest.fixture
def vlm_server():
    s = HTTPServer(host="127.0.0.1", threaded=True)
    s.start()
    prompts, lock = [], threading.Lock()

    def answer(request: Request) -> Response:
        prompt = json.loads(request.get_data())["messages"][0]["content"][-1]["text"]
        with lock:
            prompts.append(prompt)
        text = "<answer_turn_1> yes </answer_turn_1> <answer_final> yes </answer_final>" if "PH-GA" in prompt else "YES"
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        return Response(json.dumps(body), content_type="application/json")

    s.expect_request("/v1/chat/completions").respond_with_handler(answer)
    yield s, prompts
    s.clear()
    if s.is_running():
        s.stop()


@pytest.mark.slow
def test_the_issue_command_runs_and_records_the_protocol(tmp_path, monkeypatch, vlm_server):
    server, prompts = vlm_server
    checkout = tmp_path / "Edit-R2"
    write_subsets(checkout / "dataset")
    monkeypatch.setattr(upstream, "PINS", write_fake_editr2(checkout))
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    gdino = save_tiny_grounding_dino(tmp_path / "gdino")
    dino = save_tiny_timm_dinov3(tmp_path / "dinov3")
    args = ["run", "--suite", "mice", "-S", f"root={checkout}", "-S", "subset=cu", "--model", "identity",
            "--judge", "mice", "-J", "profile=judges/mice-upstream.yaml", "-J", f"upstream_repo={checkout}",
            "-J", f"detector_path={gdino}", "-J", f"features_path={dino}", "-J", f"base_url={server.url_for('/v1')}",
            "-J", "votes=2", "-J", "cache_path=none", "-J", "device=cpu", "--out", str(tmp_path / "runs"),
            "--run-name", "up"]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    store = RunStore.open(tmp_path / "runs" / "up")
    manifest = store.read_manifest()
    (j,) = manifest["judges"]
    assert j["protocol"] == "upstream" and j["upstream_commit"] == upstream.EDIT_R2_COMMIT
    assert j["config"]["features_backend"] == "timm" and j["config"]["temperature"] == 0.6
    assert manifest["suite"]["options"]["source_size"] == [512, 512]
    rows = {(sid, t, m): (score, status, reason)
            for sid, t, _k, _n, m, score, status, _v, reason in store.judgement_rows()}  # fmt: skip
    store.close()
    cc2 = rows["cu/0000000000000001", 1, "cc"]
    assert cc2 == (0.5, "ok", "upstream: empty unchanged_objects -> 0.5")  # turn 2 lists no unchanged objects
    assert rows["cu/0000000000000001", 0, "ga"][0] == 1.0 and rows["cu/0000000000000001", 0, "if"][0] == 1.0
    assert all(reason.startswith("upstream:") for _s, _st, reason in rows.values())
    assert "PH-COLOR is mug now red?" in prompts
    assert any(p.startswith("PH-GA-CU header\nPH-ROUND 1 :: ") for p in prompts)


def test_a_wrong_checkout_stops_the_run_before_any_work(tmp_path, monkeypatch):
    write_subsets(tmp_path / "data")
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    args = ["run", "--suite", "mice", "-S", f"root={tmp_path / 'data'}", "--model", "identity", "--judge", "mice",
            "-J", "protocol=upstream", "-J", f"upstream_repo={tmp_path / 'nowhere'}", "--out", str(tmp_path / "runs")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and not (tmp_path / "runs").exists()
    assert upstream.EDIT_R2_COMMIT in str(r.exception or "") + r.output
