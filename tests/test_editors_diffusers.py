"""The diffusers editor on tiny random pipelines saved in the real on-disk layout and loaded by path.

Covers each family end to end (a 2-turn run through the runner), the family defaults and what the
manifest records, seeded determinism, batching, the multi-image path, and setup errors.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from diffusers_tiny import BUILDERS, FAST_OPTIONS
from editor_fixtures import request, same_pixels, suite

from micebench.editors.base import create_editor
from micebench.errors import SetupError
from micebench.evaluate import start_run
from micebench.runner import RunSettings

pytest.importorskip("diffusers")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy machine torch's threads wait on each other
    (measured here: 2.5 s per call with 2 threads under load, 0.3 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """family -> folder of a tiny pipeline, built once per test session on first use."""
    root = tmp_path_factory.mktemp("diffusers-tiny")
    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            built[family] = str(BUILDERS[family](root / family))
        return built[family]

    return get


def editor(tiny, family: str, **opts):
    return create_editor("diffusers", {"model": tiny(family), **FAST_OPTIONS[family], **opts})


def run(tmp_path, tiny, family, n_sessions=2, batch_size=2, name="r", **opts):
    data = suite(tmp_path / "suite", n_sessions=n_sessions, n_turns=2)
    res = start_run(data, "diffusers", {"model": tiny(family), **FAST_OPTIONS[family], **opts}, [],
                    out=tmp_path / "runs", run_name=name, settings=RunSettings(batch_size=batch_size, progress=False))
    return res, pd.read_parquet(res.run_dir / "turns.parquet")


# Qwen-Image-Edit pipelines encode every input image at about 1024x1024 whatever its size (hard-coded in
# diffusers), so even their tiny versions take seconds per call: marked slow.
QWEN_SLOW = pytest.mark.slow


@pytest.mark.parametrize("family, n_sessions", [("instruct-pix2pix", 2), ("flux-kontext", 2),
                                                pytest.param("qwen-image-edit", 1, marks=QWEN_SLOW),
                                                pytest.param("qwen-image-edit-plus", 1, marks=QWEN_SLOW)])  # fmt: skip
def test_two_turn_run_per_family(tmp_path, tiny, family, n_sessions):
    import json

    res, df = run(tmp_path, tiny, family, n_sessions=n_sessions)
    assert res.failed_turns == 0 and list(df.status) == ["ok"] * (2 * n_sessions), df.error.tolist()
    for _, g in df.groupby("session_id"):
        g = g.sort_values("turn")
        assert g.input_hash.iloc[1] == g.output_hash.iloc[0]  # chain: turn 2 edits turn 1's output
        assert g.output_hash.iloc[0] != g.input_hash.iloc[0]
    assert (df.effective_instruction == df.instruction).all()
    described = json.loads((res.run_dir / "manifest.json").read_text())["editor"]["describe"]
    expected_class = {"instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
                      "flux-kontext": "FluxKontextPipeline", "qwen-image-edit": "QwenImageEditPipeline",
                      "qwen-image-edit-plus": "QwenImageEditPlusPipeline"}[family]  # fmt: skip
    assert described["family"] == family and described["pipeline"] == expected_class
    assert described["call_args"]["num_inference_steps"] == 2  # the user's option wins over the family's
    assert described["family_defaults"]["num_inference_steps"] != 2
    assert "num_inference_steps" in described["pipeline_defaults"]
    assert described["weights"].startswith("local:") and described["context"] == "chain"


def test_family_defaults_and_pipeline_defaults_are_recorded(tiny):
    d = create_editor("diffusers", {"model": tiny("instruct-pix2pix")}).describe()
    own = d["pipeline_defaults"]
    assert own["num_inference_steps"] == 100 and own["image_guidance_scale"] == 1.5
    assert d["call_args"] == {"num_inference_steps": 100, "guidance_scale": 7.5, "image_guidance_scale": 1.5}
    d = create_editor("diffusers", {"model": tiny("flux-kontext"), "guidance_scale": 4.0}).describe()
    assert d["pipeline_defaults"]["guidance_scale"] == 3.5  # diffusers' own default, recorded as such
    assert d["call_args"] == {"num_inference_steps": 28, "guidance_scale": 4.0}


def test_same_seed_same_pixels_other_seed_other_pixels(tiny):
    reqs = [request(0, "a"), request(1, "b")]
    first = editor(tiny, "instruct-pix2pix", seed=7).edit(reqs)
    again = editor(tiny, "instruct-pix2pix", seed=7).edit(reqs)
    other = editor(tiny, "instruct-pix2pix", seed=8).edit(reqs)
    assert all(same_pixels(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert not any(same_pixels(a.image, b.image) for a, b in zip(first, other, strict=True))
    assert first[0].extra["seed"] == again[0].extra["seed"] != other[0].extra["seed"]


@pytest.mark.parametrize("family", ["instruct-pix2pix", "flux-kontext"])
def test_batched_call_matches_one_by_one(tiny, family):
    """A turn's noise depends on (seed, session, turn) only; batching changes arithmetic order at most."""
    reqs = [request(0, "a"), request(1, "b"), request(0, "c")]
    ed = editor(tiny, family)
    calls = []
    real = ed.load()

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, **kw):
            calls.append(kw)
            return real(**kw)

    ed._pipe = Spy()
    batched = ed.edit(reqs)
    assert len(calls) == 1 and calls[0]["prompt"] == [r.instruction for r in reqs]
    singles = [ed.edit([r])[0] for r in reqs]
    for b, s in zip(batched, singles, strict=True):
        diff = np.abs(np.asarray(b.image, dtype=int) - np.asarray(s.image, dtype=int))
        assert diff.max() <= 2 and diff.mean() < 0.05


def test_images_of_different_sizes_go_in_separate_calls(tiny):
    ed = editor(tiny, "instruct-pix2pix")
    real = ed.load()
    sizes = []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, **kw):
            imgs = kw["image"] if isinstance(kw["image"], list) else [kw["image"]]
            sizes.append([im.size for im in imgs])
            return real(**kw)

    ed._pipe = Spy()
    out = ed.edit([request(0, "a"), request(0, "b", size=(80, 64)), request(0, "c")])
    assert sorted(sizes) == [[(64, 64), (64, 64)], [(80, 64)]]
    assert [r.image.size for r in out] == [(64, 64), (80, 64), (64, 64)]  # results stay in request order


def test_kontext_output_keeps_the_input_aspect_ratio(tiny):
    out = editor(tiny, "flux-kontext").edit([request(0, "wide", size=(96, 64))])[0]
    assert out.error is None and out.image.width > out.image.height


@QWEN_SLOW
def test_multi_image_sends_source_and_previous_outputs(tiny):
    ed = editor(tiny, "qwen-image-edit-plus", context="multi-image")
    real = ed.load()
    sent = []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, **kw):
            sent.append(kw)
            return real(**kw)

    ed._pipe = Spy()
    req = request(1, "m")
    res = ed.edit([req])[0]
    assert res.error is None and res.extra["context_images"] == ["source", "turn 1"]
    images = sent[0]["image"]
    assert isinstance(images, list) and len(images) == 2
    assert same_pixels(images[0], req.source_image) and same_pixels(images[1], req.history_images[0])
    assert sent[0]["prompt"] == req.instruction and res.effective_instruction == req.instruction


def test_multi_image_refused_for_a_single_image_pipeline(tiny):
    with pytest.raises(SetupError, match="multi-image"):
        create_editor("diffusers", {"model": tiny("instruct-pix2pix"), "context": "multi-image"}).preflight()


@pytest.mark.parametrize("opts, message", [
    ({"true_cfg_scale": 4.0}, "takes no 'true_cfg_scale'"),
    ({"call_kwargs": {"strength_of_cat": 1}}, "takes no 'strength_of_cat'"),
    ({"call_kwargs": {"prompt": "x"}}, "may not set prompt"),
    ({"device": "cuda:0"}, None),
    ({"offload": "model"}, None),
])  # fmt: skip
def test_bad_options_are_setup_errors(tiny, opts, message):
    import torch

    ed = create_editor("diffusers", {"model": tiny("instruct-pix2pix"), **opts})
    if message is None:
        if torch.cuda.is_available():
            pytest.skip("a GPU is present: these options are valid here")
        message = "GPU|CUDA"
    with pytest.raises(SetupError, match=message):
        ed.load()


def test_missing_or_wrong_model_is_a_setup_error(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SetupError, match="cannot read the pipeline index"):
        create_editor("diffusers", {"model": str(tmp_path / "nowhere")}).preflight()
    with pytest.raises(SetupError, match="cannot read the pipeline index"):
        create_editor("diffusers", {"model": "someone/not-in-the-cache", "local_files_only": True}).preflight()
    # A folder whose weights are gone: the index reads, the load fails, in one line.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny("instruct-pix2pix"), broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(SetupError, match="cannot load StableDiffusionInstructPix2PixPipeline") as e:
        create_editor("diffusers", {"model": str(broken)}).load()
    assert "\n" not in str(e.value)


def test_a_pipeline_that_takes_no_image_is_refused(tmp_path):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(SetupError, match="not an image-editing pipeline"):
        create_editor("diffusers", {"model": str(tmp_path / "ddpm")}).preflight()


def test_missing_diffusers_is_a_setup_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(SetupError, match=r"pip install 'micebench\[diffusers\]'"):
        create_editor("diffusers", {"model": "x"}).preflight()


def test_a_failing_call_fails_its_turns_only(tiny):
    ed = editor(tiny, "instruct-pix2pix")
    real = ed.load()

    class Flaky:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, **kw):
            imgs = kw["image"] if isinstance(kw["image"], list) else [kw["image"]]
            if imgs[0].size == (80, 64):
                raise RuntimeError("CUDA out of memory (pretend)")
            return real(**kw)

    ed._pipe = Flaky()
    out = ed.edit([request(0, "a"), request(0, "b", size=(80, 64))])
    assert out[0].error is None and out[1].error is not None and "out of memory" in out[1].error


def test_constructing_the_editor_imports_nothing_heavy():
    import subprocess

    code = ("import sys\nfrom micebench.editors.base import create_editor\n"
            "create_editor('diffusers', {'model': 'x'})\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.gpu
def test_gpu_bfloat16_and_offload(tiny):
    """On a GPU: the default dtype is bfloat16, and model offload runs the pipeline too."""
    ed = editor(tiny, "instruct-pix2pix")
    assert ed.load().unet.dtype.__str__() == "torch.bfloat16"
    out = ed.edit([request(0, "a")])[0]
    assert out.error is None
    off = editor(tiny, "instruct-pix2pix", offload="model")
    assert off.edit([request(0, "a")])[0].error is None

