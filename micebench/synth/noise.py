"""The editor noise the scene judge is documented to tolerate, as reusable image transforms.

Each is at the documented limit: Gaussian blur of radius 1.0 px, JPEG at quality 75, a shift of
3 px down and 3 px left (wrapping), and an additive colour shift of (+12, -10, +8). ``all`` applies
the four in that order (blur, shift, colour, JPEG).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def blur(img: Image.Image, radius: float = 1.0) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def jpeg(img: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.convert("RGB")


def shift(img: Image.Image, dy: int = 3, dx: int = -3) -> Image.Image:
    return Image.fromarray(np.roll(np.roll(np.asarray(img.convert("RGB")), dy, 0), dx, 1))


def tint(img: Image.Image, offset: tuple[int, int, int] = (12, -10, 8)) -> Image.Image:
    arr = np.asarray(img.convert("RGB")).astype(np.int16) + np.asarray(offset, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


NOISES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda im: im,
    "blur": blur,
    "jpeg": jpeg,
    "shift": shift,
    "tint": tint,
    "all": lambda im: jpeg(tint(shift(blur(im)))),
}
