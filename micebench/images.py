"""Image helpers: validation of editor outputs, canonical PNG bytes, content hashes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image


class BadImageError(ValueError):
    """An object that is not a usable image."""


def as_rgb_image(obj: Any, what: str = "image") -> Image.Image:
    """Return ``obj`` as an RGB PIL image, or raise :class:`BadImageError` saying why not.

    Accepts PIL images and HxWx3 / HxW uint8 (or 0..1 float) numpy arrays.
    """
    if obj is None:
        raise BadImageError(f"{what} is None")
    if isinstance(obj, Image.Image):
        img = obj
    else:
        import numpy as np

        if not isinstance(obj, np.ndarray):
            raise BadImageError(f"{what} is a {type(obj).__name__}, not a PIL image or numpy array")
        arr = obj
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise BadImageError(f"{what} has array shape {arr.shape}; expected HxW or HxWx3")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise BadImageError(f"{what} has dtype {arr.dtype} or non-finite values")
            arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.size == 0:
            raise BadImageError(f"{what} is empty ({arr.shape})")
        img = Image.fromarray(arr)
    if img.width == 0 or img.height == 0:
        raise BadImageError(f"{what} is {img.width}x{img.height}")
    return img if img.mode == "RGB" else img.convert("RGB")


def png_bytes(img: Image.Image) -> bytes:
    """Deterministic PNG encoding (no metadata), so equal pixels give equal bytes and hashes.

    Compression level 1: on 256x256 images it encodes several times faster than the default 6
    for files about a third larger, and encoding is the largest cost of the harness per turn.
    """
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_hash(img: Image.Image) -> str:
    """sha256 of the decoded pixels (mode, size, raw bytes): the same on every machine, whatever
    zlib the local Pillow bundles (PNG bytes are not)."""
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def load_image(path: str | Path, what: str = "image") -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise BadImageError(f"{what}: no such file {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return as_rgb_image(im, what)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{what}: cannot read {p}: {e}") from e


def load_source(session: Any) -> Image.Image:
    """A session's source image as the editor and judges must see it: read from ``session.source_image``, then
    resized (LANCZOS, no crop) to ``session.metadata["source_resize"]`` = [width, height] when the suite says so
    (MICE-Bench sources are 512 x 512 upstream)."""
    img = load_image(session.source_image, f"session {session.id}: source image")
    size = (session.metadata or {}).get("source_resize")
    if size:
        w, h = (int(v) for v in size)
        if img.size != (w, h):
            img = img.resize((w, h), Image.LANCZOS)
    return img
