"""Learned judges refuse random weights unless told (test-only), an offline Hub fails in seconds with
the download command, and a VLM server is checked with one GET /models before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from judge_fixtures import FakeDetector, FakeVLM, save_tiny_clip, save_tiny_dinov3, session, turn
from loud_fixtures import env
from PIL import Image
from pytest_httpserver import HTTPServer

from micebench.errors import SetupError
from micebench.judges.base import create_judge
from micebench.spec import JudgeRequest
from micebench.weights import hub_unreachable, pretrained_source


def _requests():
    rng = np.random.default_rng(0)
    im = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    sess = session([turn("color_alter", "Change the color of [mug] to [red]")], "cu")
    return [JudgeRequest(session=sess, turn_index=0, source_image=im[0], outputs=(im[1],))]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def dino_dirs(tmp_path_factory):
    """A complete tiny DINOv3 and a copy whose checkpoint lacks three of its weights."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("dino")
    full = save_tiny_dinov3(root / "full")
    partial = root / "partial"
    shutil.copytree(full, partial)
    weights = load_file(str(full / "model.safetensors"))
    for key in ["embeddings.cls_token", "layer.0.mlp.up_proj.weight", "norm.weight"]:
        weights.pop(key)
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    return full, partial


def test_clip_without_checkpoint_refuses_random_weights(tiny_clip):
    cfg, _ = tiny_clip
    opts = {"model_name": "tiny-clip-test", "model_config_file": str(cfg), "device": "cpu"}
    j = create_judge("clip", opts)
    for call in (j.preflight, lambda: j.score(_requests())):
        with pytest.raises(SetupError, match="no checkpoint .* weights would be random"):
            call()
    assert "allow_random_weights" not in j.describe()["config"] and "random_weights" not in j.describe()
    ok = create_judge("clip", {**opts, "allow_random_weights": True})
    ok.preflight()
    rows = ok.score(_requests())
    assert ok.describe()["random_weights"] is True and ok.describe()["config"]["allow_random_weights"] is True
    assert ok.key != j.key
    assert {x.revision for x in rows[0]} == {"random-weights"}


def test_dino_refuses_a_checkpoint_that_lacks_weights(dino_dirs):
    full, partial = dino_dirs
    j = create_judge("dino", {"features_path": str(partial), "device": "cpu"})
    with pytest.raises(SetupError, match=r"lacks 3 weights .*embeddings.cls_token.*would be random"):
        j.preflight()
    ok = create_judge("dino", {"features_path": str(partial), "device": "cpu", "allow_random_weights": True})
    ok.preflight()
    row = ok.score(_requests())[0]
    assert ok.describe()["random_weights"] is True and row[0].revision.startswith("random-weights+")
    complete = create_judge("dino", {"features_path": str(full), "device": "cpu"})
    complete.preflight()
    assert "random_weights" not in complete.describe()
    assert not complete.score(_requests())[0][0].revision.startswith("random")


def test_mice_refuses_partial_feature_weights_and_marks_allowed_ones(dino_dirs, tmp_path):
    _, partial = dino_dirs
    fakes = {"detector": FakeDetector({}), "vlm": FakeVLM("Yes")}
    opts = {"features_path": str(partial), "device": "cpu", "cache_path": "none"}
    j = create_judge("mice", opts)
    j._detector, j._vlm = fakes["detector"], fakes["vlm"]
    with pytest.raises(SetupError, match="DINOv3 features: the checkpoint .* lacks 3 weights"):
        j.preflight()
    ok = create_judge("mice", {**opts, "allow_random_weights": True})
    ok._detector, ok._vlm = fakes["detector"], fakes["vlm"]
    ok.preflight()
    assert ok._features is None  # loaded to check, then let go until the judge phase
    assert ok.describe()["random_weights"] is True
    plain = create_judge("mice", {"cache_path": "none"})
    assert "allow_random_weights" not in plain.describe()["config"]


def test_offline_hub_fails_fast_with_the_download_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SetupError) as e:
        pretrained_source("some-org/not-cached-model", "GroundingDINO detector")
    msg = str(e.value)
    assert "`hf download some-org/not-cached-model`" in msg
    assert "`huggingface-cli download some-org/not-cached-model`" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    assert "cannot connect to 127.0.0.1:9" in hub_unreachable()
    assert time.perf_counter() - started < 3.5
    with pytest.raises(SetupError, match="not an existing folder"):
        pretrained_source(str(tmp_path / "no" / "such" / "dir"), "DINOv3 features")


def test_a_cached_hub_id_loads_offline_without_asking_the_network(dino_dirs, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    full, _ = dino_dirs
    snap = tmp_path / "hub" / "models--some-org--tiny-dino" / "snapshots" / ("0" * 40)
    shutil.copytree(full, snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pretrained_source("some-org/tiny-dino", "DINOv3 features") == ("some-org/tiny-dino",
                                                                          {"local_files_only": True})
    j = create_judge("dino", {"features_path": "some-org/tiny-dino", "device": "cpu"})
    j.preflight()


def test_run_with_mice_and_no_models_stops_in_seconds_before_editing(tmp_path):
    out = tmp_path / "runs"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "micebench.cli", "run", "--suite", "photos", "--limit", "1", "--model",
         "faulty_editors:FaultyEditor", "-M", f"pid_file={tmp_path / 'edited'}", "--judge", "mice", "-J",
         "base_url=http://127.0.0.1:9/v1", "--out", str(out), "-q"],
        capture_output=True, text=True,
        env=env(HF_HUB_CACHE=str(tmp_path / "empty-cache"), HF_ENDPOINT="http://127.0.0.1:9"),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "judge mice" in err[0] and "hf download IDEA-Research/grounding-dino-tiny" in err[0]
    assert "Traceback" not in proc.stderr and not out.exists()
    assert elapsed < 60, elapsed  # the old code spent 981 s on six turns, after editing them all


@pytest.fixture
def server():
    s = HTTPServer(host="127.0.0.1")
    s.start()
    yield s
    s.clear()
    s.stop()


def _mice_on(base_url: str, model: str = "judge-model"):
    j = create_judge("mice", {"base_url": base_url, "model": model, "cache_path": "none"})
    j._detector, j._features = FakeDetector({}), object()
    return j


def test_vlm_server_is_checked_with_one_get_models(server):
    server.expect_request("/v1/models", method="GET").respond_with_json({"data": [{"id": "judge-model"}]})
    _mice_on(server.url_for("/v1")).preflight()
    assert [r.path for r, _ in server.log] == ["/v1/models"]
    with pytest.raises(SetupError, match=r"serves judge-model, not 'other'"):
        _mice_on(server.url_for("/v1"), "other").preflight()
    server.expect_request("/models").respond_with_data("not found", status=404)  # base_url without /v1
    with pytest.raises(SetupError, match="HTTP 404; base_url .* ending in /v1"):
        _mice_on(server.url_for("/")).preflight()
    with pytest.raises(SetupError, match="cannot be reached"):
        _mice_on("http://127.0.0.1:9/v1").preflight()
    server.clear()
    server.expect_request("/v1/models").respond_with_data("<html>proxy</html>")
    with pytest.raises(SetupError, match="did not answer with a model list"):
        _mice_on(server.url_for("/v1")).preflight()


def test_mice_without_an_endpoint_is_a_setup_error(monkeypatch):
    monkeypatch.delenv("MICEBENCH_VLM_BASE_URL", raising=False)
    j = create_judge("mice", {"cache_path": "none"})
    j._detector, j._features = FakeDetector({}), object()
    from micebench.preflight import preflight

    with pytest.raises(SetupError, match="judge mice: .*no VLM endpoint"):
        preflight(None, {}, [j])
    assert json.dumps(j.describe())
