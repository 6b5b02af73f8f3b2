"""The ``pixel`` judge: L1, L2 (MSE), PSNR and SSIM of the output against the source and the
previous turn's image. Pure numpy/scipy; SSIM follows scikit-image's defaults (7x7 uniform
window, sample covariance, K1=0.01, K2=0.03, mean over channels) and is tested against it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.spec import Judgement, JudgeRequest, MetricSpec


def _as_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a - b)))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, cap: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; identical images give ``cap`` (inf when cap is None)."""
    err = mse(a, b)
    if err == 0:
        return float("inf") if cap is None else float(cap)
    value = float(10 * np.log10(data_range**2 / err))
    return min(value, cap) if cap is not None else value


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, win_size: int = 7) -> float:
    """Mean structural similarity of two HxW or HxWxC float images (scikit-image's defaults)."""
    from scipy.ndimage import uniform_filter

    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < win_size:
        raise ValueError(f"ssim needs images of at least {win_size}x{win_size}, got {a.shape[:2]}")
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., c], b[..., c], data_range, win_size) for c in range(a.shape[2])]))
    k1, k2 = 0.01, 0.03
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, as scikit-image does by default
    ux, uy = uniform_filter(a, win_size), uniform_filter(b, win_size)
    uxx, uyy, uxy = uniform_filter(a * a, win_size), uniform_filter(b * b, win_size), uniform_filter(a * b, win_size)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


class PixelJudge(Judge):
    """Low-level similarity of each output to the source (``*_src``) and to the previous image (``*_prev``).

    Not a judge of instruction following: high similarity to the source is what a do-nothing editor
    gets. An output of another size is resized (bicubic) to the reference's size first.
    """

    metrics = tuple(
        MetricSpec(
            name=f"{m}_{ref}",
            # low-level similarity is no MICE axis: a correct edit lowers it as much as a destructive one
            # (CC is about the objects the instruction did not touch), so it stays out of IF / CC / GA tables
            role="other",
            higher_is_better=higher,
            range=bounds,
            description=f"{what} of the output against the {'source' if ref == 'src' else 'previous'} image",
        )
        for ref in ("src", "prev")
        for m, higher, bounds, what in (
            ("l1", False, (0.0, 1.0), "mean absolute difference (0..1 pixels)"),
            ("l2", False, (0.0, 1.0), "mean squared difference (0..1 pixels)"),
            ("psnr", True, (0.0, 100.0), "PSNR in dB, capped at psnr_cap"),
            ("ssim", True, (-1.0, 1.0), "SSIM (scikit-image defaults)"),
        )
    )
    version = "1"

    class Config(JudgeConfig):
        psnr_cap: float = Field(default=100.0, gt=0, description="PSNR reported for identical images (dB).")

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """PSNR's upper bound is the configured cap."""
        cap = self.config.psnr_cap
        return tuple(s.model_copy(update={"range": (0.0, cap)}) if s.name.startswith("psnr") else s
                     for s in super().metric_specs())

    def score(self, requests: list[JudgeRequest]) -> list[list[Judgement]]:
        return [self._one(r) for r in requests]

    def _one(self, r: JudgeRequest) -> list[Judgement]:
        out_img = r.output
        result: list[Judgement] = []
        for ref_name, ref_img in (("src", r.source_image), ("prev", r.previous)):
            ref = _as_float(ref_img)
            img = out_img if out_img.size == ref_img.size else out_img.resize(ref_img.size, Image.BICUBIC)
            out = _as_float(img)
            values = {"l1": l1(out, ref), "l2": mse(out, ref), "psnr": psnr(out, ref, cap=self.config.psnr_cap)}
            try:
                values["ssim"] = ssim(out, ref)
            except ValueError as e:
                result.append(Judgement.unscored(f"ssim_{ref_name}", str(e), judge="pixel"))
            for m, v in values.items():
                result.append(Judgement(metric=f"{m}_{ref_name}", score=v, votes=(v,), judge="pixel"))
        return result
