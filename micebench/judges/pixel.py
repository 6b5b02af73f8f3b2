"""The ``pixel`` judge: L1, L2 (MSE), PSNR and SSIM of the output against the source and the
previous turn's image. Pure numpy/scipy; SSIM follows scikit-image's defaults (7x7 uniform
window, sample covariance, K1=0.01, K2=0.03, mean over channels) and is tested against it.

Memory is bounded whatever the image size: every metric is computed over horizontal strips of at
most :data:`STRIP_PIXELS` pixels (SSIM strips carry the window's half-height of extra rows above and
below, so each strip's interior equals the full-image computation), in float64, on the images'
8-bit pixels. L1 and MSE of 8-bit images are summed exactly in integers. Results are those of the
full-resolution computation (no resizing, no lower precision), so nothing needs recording in the
judgement: an 8000x8000 pair costs a few hundred MB instead of ~9 GiB.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image
from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.spec import Judgement, JudgeRequest, MetricSpec

#: Pixels per strip (per channel): 512k float64 values is 4 MB per work array, about a dozen live.
STRIP_PIXELS = 1 << 19


def _as_uint8(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _strips(height: int, width: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int]]:
    """Row ranges [r0, r1) covering [start, stop) with at most STRIP_PIXELS pixels each."""
    stop = height if stop is None else stop
    rows = max(1, STRIP_PIXELS // max(1, width))
    for r0 in range(start, stop, rows):
        yield r0, min(stop, r0 + rows)


def _scale(a: np.ndarray) -> float:
    """1/255 for 8-bit input (the judge's), 1 for float input already in [0, data_range]."""
    return 1.0 / 255.0 if a.dtype == np.uint8 else 1.0


def _diff_sums(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """(sum |a-b|, sum (a-b)^2, element count) in the units of the data (8-bit input scaled to [0, 1])."""
    if a.shape != b.shape:
        raise ValueError(f"images need equal shapes, got {a.shape} and {b.shape}")
    s_abs: float | int = 0
    s_sq: float | int = 0
    exact = a.dtype == np.uint8 and b.dtype == np.uint8
    for r0, r1 in _strips(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64))):
        if exact:
            d = a[r0:r1].astype(np.int32) - b[r0:r1].astype(np.int32)
            s_abs += int(np.abs(d).sum(dtype=np.int64))
            s_sq += int((d * d).sum(dtype=np.int64))
        else:
            d = a[r0:r1].astype(np.float64) - b[r0:r1].astype(np.float64)
            s_abs += float(np.abs(d).sum())
            s_sq += float((d * d).sum())
    k = _scale(a)
    return float(s_abs) * k, float(s_sq) * k * k, int(a.size)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    s_abs, _, n = _diff_sums(a, b)
    return s_abs / n


def mse(a: np.ndarray, b: np.ndarray) -> float:
    _, s_sq, n = _diff_sums(a, b)
    return s_sq / n


def _psnr_from_mse(err: float, data_range: float, cap: float | None) -> float:
    if err == 0:
        return float("inf") if cap is None else float(cap)
    value = float(10 * np.log10(data_range**2 / err))
    return min(value, cap) if cap is not None else value


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, cap: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; identical images give ``cap`` (inf when cap is None)."""
    return _psnr_from_mse(mse(a, b), data_range, cap)


def _ssim_sum(a: np.ndarray, b: np.ndarray, data_range: float, win_size: int) -> float:
    """Sum of the SSIM map of one channel over the rows and columns scikit-image averages (edges cropped)."""
    from scipy.ndimage import uniform_filter

    height, width = a.shape
    pad = (win_size - 1) // 2
    k = _scale(a)
    k1, k2 = 0.01, 0.03
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, as scikit-image does by default
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    total = 0.0
    for r0, r1 in _strips(height, width, pad, height - pad):
        x = a[r0 - pad : r1 + pad].astype(np.float64)
        y = b[r0 - pad : r1 + pad].astype(np.float64)
        if k != 1.0:
            x *= k
            y *= k
        ux, uy = uniform_filter(x, win_size), uniform_filter(y, win_size)
        uxx, uyy = uniform_filter(x * x, win_size), uniform_filter(y * y, win_size)
        uxy = uniform_filter(x * y, win_size)
        del x, y
        vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
        del uxx, uyy, uxy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        total += float(s[pad : pad + (r1 - r0), pad : width - pad].sum())
    return total


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, win_size: int = 7) -> float:
    """Mean structural similarity of two HxW or HxWxC images (scikit-image's defaults).

    Float input is taken as is (``data_range`` 1 for [0, 1] images); 8-bit input is scaled to [0, 1].
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < win_size:
        raise ValueError(f"ssim needs images of at least {win_size}x{win_size}, got {a.shape[:2]}")
    pad = (win_size - 1) // 2
    count = (a.shape[0] - 2 * pad) * (a.shape[1] - 2 * pad)
    if a.ndim == 3:
        return float(np.mean([_ssim_sum(a[..., c], b[..., c], data_range, win_size) / count
                              for c in range(a.shape[2])]))  # fmt: skip
    return _ssim_sum(a, b, data_range, win_size) / count


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
            ref = _as_uint8(ref_img)
            img = out_img if out_img.size == ref_img.size else out_img.resize(ref_img.size, Image.BICUBIC)
            out = _as_uint8(img)
            s_abs, s_sq, n = _diff_sums(out, ref)
            values = {"l1": s_abs / n, "l2": s_sq / n, "psnr": _psnr_from_mse(s_sq / n, 1.0, self.config.psnr_cap)}
            try:
                values["ssim"] = ssim(out, ref)
            except ValueError as e:
                result.append(Judgement.unscored(f"ssim_{ref_name}", str(e), judge="pixel"))
            del out, ref
            for m, v in values.items():
                result.append(Judgement(metric=f"{m}_{ref_name}", score=v, votes=(v,), judge="pixel"))
        return result
