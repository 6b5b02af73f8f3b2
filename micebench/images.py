"""Image helpers: validation of editor outputs, canonical PNG bytes, content hashes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image


class BadImageError(ValueError):
    """An object that is not a usable image."""


#: PIL modes whose pixels are not 8-bit: converted through numpy by their range (see ``to_uint8``).
_WIDE_MODES = {"I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16", "I;16N": "uint16", "I": "int32", "F": "float32"}
_TOL = 1e-3  # float noise tolerated outside a range (e.g. -0.0004 from a decoder), then clipped


def _range(arr) -> str:
    return f"values from {float(arr.min()):.6g} to {float(arr.max()):.6g}"


def to_uint8(arr, what: str = "image", sixteen_bit: bool = False):
    """Map a numpy image of any real dtype to uint8 by its range, or raise :class:`BadImageError`.

    - uint8: as is; bool: False/True -> 0/255.
    - 16-bit (``sixteen_bit``, numpy uint16, PIL ``I;16``): the full 0..65535 range -> 0..255.
    - other integers: values within 0..255 are taken as 8-bit, within 0..65535 as 16-bit; else refused.
    - floats: within 0..1 -> x 255; within 0..255 -> as 8-bit values; anything else (e.g. -1..1) refused.
      A float image whose values all lie in 0..1 is read as 0..1 (the ambiguity is only for near-black
      0..255 images). Non-finite values are refused.
    Refusals name the dtype and the range, so an error row says what the editor returned.
    """
    import numpy as np

    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.size == 0:
        raise BadImageError(f"{what} is empty ({arr.shape})")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and (sixteen_bit or arr.dtype == np.uint16) and hi <= 65535:
            return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return ((arr.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
        raise BadImageError(f"{what} has dtype {arr.dtype} with {_range(arr)}: expected 0..255 or 0..65535")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            raise BadImageError(f"{what} has dtype {arr.dtype} with {int((~finite).sum())} non-finite values (NaN/inf)")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= -_TOL and hi <= 1 + _TOL:
            return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
        if lo >= -_TOL * 255 and hi <= 255 * (1 + _TOL):
            return (np.clip(arr, 0, 255) + 0.5).astype(np.uint8)
        hint = "; a -1..1 image needs (x + 1) / 2 first" if lo >= -1 - _TOL and hi <= 1 + _TOL else ""
        raise BadImageError(f"{what} has dtype {arr.dtype} with {_range(arr)}: expected 0..1 or 0..255{hint}")
    raise BadImageError(f"{what} has dtype {arr.dtype}: expected an integer or float image")


def as_rgb_image(obj: Any, what: str = "image") -> Image.Image:
    """Return ``obj`` as an RGB PIL image, or raise :class:`BadImageError` saying why not.

    Accepts PIL images (8-bit modes, and the wide modes I;16, I and F, converted by their range) and
    HxW / HxWx1 / HxWx3 / HxWx4 numpy arrays of any real dtype (see :func:`to_uint8`).
    """
    if obj is None:
        raise BadImageError(f"{what} is None")
    if isinstance(obj, Image.Image):
        img = obj
        if img.width == 0 or img.height == 0:
            raise BadImageError(f"{what} is {img.width}x{img.height}")
        if img.mode in _WIDE_MODES:
            import numpy as np

            arr = np.asarray(img).astype(_WIDE_MODES[img.mode])
            wide = to_uint8(arr, f"{what} (PIL mode {img.mode})", sixteen_bit=img.mode.startswith("I;16"))
            img = Image.fromarray(wide)
    else:
        import numpy as np

        if not isinstance(obj, np.ndarray):
            raise BadImageError(f"{what} is a {type(obj).__name__}, not a PIL image or numpy array")
        arr = obj
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise BadImageError(f"{what} has array shape {arr.shape}; expected HxW or HxWx3")
        if arr.size == 0:
            raise BadImageError(f"{what} is empty ({arr.shape})")
        arr = to_uint8(arr, what)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(np.ascontiguousarray(arr))
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
