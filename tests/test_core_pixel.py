"""The pixel judge's metrics agree with scikit-image's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from micebench.judges import create_judge
from micebench.judges.pixel import l1, mse, psnr, ssim
from micebench.spec import JudgeRequest, Session, Turn


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_metrics_match_skimage(pair):
    a, b = pair
    fa, fb = a / 255.0, b / 255.0
    assert abs(mse(fa, fb) - mean_squared_error(a, b) / 255**2) < 1e-9
    assert abs(psnr(fa, fb) - peak_signal_noise_ratio(a, b, data_range=255)) < 1e-6
    ref = structural_similarity(a, b, channel_axis=2, data_range=255)
    assert abs(ssim(fa, fb) - ref) < 1e-6
    gray_ref = structural_similarity(a[..., 0], b[..., 0], data_range=255)
    assert abs(ssim(fa[..., 0], fb[..., 0]) - gray_ref) < 1e-6
    assert abs(l1(fa, fb) - np.abs(a.astype(float) - b).mean() / 255) < 1e-12


def test_identical_images_and_tiny_images():
    x = np.zeros((8, 8, 3))
    assert psnr(x, x) == float("inf") and psnr(x, x, cap=100.0) == 100.0
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.zeros((5, 5)), np.zeros((5, 5)))


def test_judge_scores_against_source_and_previous(pair):
    a, b = pair
    src, out1, out2 = Image.fromarray(a), Image.fromarray(b), Image.fromarray(a)
    turn = Turn(instruction="x", task_type="color_alter")
    s = Session(id="s", suite="t", source_image="/nonexistent.png", turns=(turn, turn))
    judge = create_judge("pixel")
    [res] = judge.score([JudgeRequest(session=s, turn_index=1, source_image=src, outputs=(out1, out2))])
    got = {j.metric: j.score for j in res}
    assert got["l2_src"] == 0 and got["psnr_src"] == 100.0  # turn 2 output equals the source
    assert abs(got["ssim_prev"] - structural_similarity(a, b, channel_axis=2, data_range=255)) < 1e-6
    [tiny] = judge.score([JudgeRequest(session=s, turn_index=0, source_image=Image.new("RGB", (4, 4)),
                                       outputs=(Image.new("RGB", (4, 4)),))])
    by = {j.metric: j for j in tiny}
    assert by["ssim_src"].status.value == "unscored" and by["ssim_src"].score is None
