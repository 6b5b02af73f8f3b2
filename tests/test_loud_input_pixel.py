"""The pixel judge's memory is bounded by its strip size, whatever the image size, and strips change
nothing: SSIM, MSE, PSNR and L1 still equal scikit-image's full-image values."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from micebench.judges import create_judge, pixel
from micebench.spec import JudgeRequest, Session, Turn


def pair(h, w, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    return a, b


def request(a, b):
    turn = Turn(instruction="x", task_type="color_alter")
    s = Session(id="s", suite="t", source_image="/nonexistent.png", turns=(turn,))
    return JudgeRequest(session=s, turn_index=0, source_image=Image.fromarray(a), outputs=(Image.fromarray(b),))


@pytest.mark.parametrize("strip", [1, 200, 5000, 1 << 21])
def test_strips_give_scikit_image_values(monkeypatch, strip):
    monkeypatch.setattr(pixel, "STRIP_PIXELS", strip)
    a, b = pair(61, 37)
    [res] = create_judge("pixel").score([request(a, b)])
    got = {j.metric: j.score for j in res}
    assert abs(got["ssim_src"] - structural_similarity(a, b, channel_axis=2, data_range=255)) < 1e-9
    assert abs(got["l2_src"] - mean_squared_error(a, b) / 255**2) < 1e-12
    assert abs(got["psnr_src"] - peak_signal_noise_ratio(a, b, data_range=255)) < 1e-9
    assert abs(got["l1_src"] - np.abs(a.astype(float) - b).mean() / 255) < 1e-12
    fa, fb = a / 255.0, b / 255.0  # the float API too
    assert abs(pixel.ssim(fa, fb) - structural_similarity(a, b, channel_axis=2, data_range=255)) < 1e-9
    assert abs(pixel.ssim(fa[..., 1], fb[..., 1]) - structural_similarity(a[..., 1], b[..., 1], data_range=255)) < 1e-9


def test_peak_memory_is_bounded_by_the_strip_not_the_image(monkeypatch):
    # 1200x1200: the full-resolution float64 computation holds ~35 MB per work array and several
    # hundred MB at its peak; with 64k-pixel strips the judge needs the 8-bit images plus a few MB.
    monkeypatch.setattr(pixel, "STRIP_PIXELS", 1 << 16)
    a, b = pair(1200, 1200, seed=1)
    req = request(a, b)
    judge = create_judge("pixel")
    tracemalloc.start()
    try:
        [res] = judge.score([req])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    image_bytes = a.nbytes  # one 8-bit copy of an image: 4.3 MB
    assert peak < 5 * image_bytes + 16 * 8 * (1 << 16), f"peak {peak / 2**20:.1f} MiB"
    got = {j.metric: j.score for j in res}
    ref = structural_similarity(a, b, channel_axis=2, data_range=255)
    assert abs(got["ssim_src"] - ref) < 1e-9
