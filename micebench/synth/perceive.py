"""Reading a synthetic scene back from pixels: background, and per grid cell shape, colour, material, text.

Every pixel is assigned to the nearest palette tone (object colours, ink, sign plate, and the tones of
the background identified first); a cell whose share of non-background pixels is over
``MIN_FOREGROUND`` holds an object. Shape: best overlap (IoU, after centroid alignment) with the
rendered shape templates. Colour: majority of object-colour pixels. Material: share and layout of ink
pixels inside the object. Text: template matching of the bitmap font on a sign's ink.
This reads any image laid out on the scene grid, whoever drew it; it never sees a scene graph.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from micebench.synth import font, scene

MIN_FOREGROUND = 0.06  # share of a cell that must be object pixels for the cell to hold an object
MIN_SHAPE_IOU = 0.55  # below this the blob is recorded with shape "unknown"
BG_TOLERANCE = 60.0  # RGB distance within which a pixel counts as explained by a background tone
MIN_BG_EXPLAINED = 0.45  # share of pixels a background must explain to be identified

_COLOR_NAMES = list(scene.COLORS)
_INK, _PLATE = len(_COLOR_NAMES), len(_COLOR_NAMES) + 1


def identify_background(arr: np.ndarray) -> tuple[str | None, float]:
    """(name, share of pixels its tones explain) of the best-fitting named background.

    Candidates are ranked by a soft score (closeness to their tones), so a plain background is not
    mistaken for a patterned one whose second tone is near it; the winner must explain
    ``MIN_BG_EXPLAINED`` of the pixels within ``BG_TOLERANCE``.
    """
    px = arr[::4, ::4].reshape(-1, 3)
    best, best_soft, best_share = None, -1.0, 0.0
    for name, tones in scene.BACKGROUNDS.items():
        d = np.min([np.sqrt(((px - np.asarray(t, dtype=np.float32)) ** 2).sum(axis=1)) for t in tones], axis=0)
        soft = float(np.mean(np.clip(1 - d / BG_TOLERANCE, 0, 1)))
        if soft > best_soft:
            best, best_soft, best_share = name, soft, float(np.mean(d < BG_TOLERANCE))
    return (best if best_share >= MIN_BG_EXPLAINED else None), best_share


_Q = 4  # colour quantisation shift for the lookup tables (32 levels per channel)


@lru_cache(maxsize=16)
def _lut(bg: str | None) -> np.ndarray:
    """Nearest-tone label for every quantised RGB colour: colour index, _INK, _PLATE or -1 (background)."""
    tones = [scene.COLORS[n] for n in _COLOR_NAMES] + [scene.INK, scene.PLATE]
    for ts in [scene.BACKGROUNDS[bg]] if bg else list(scene.BACKGROUNDS.values()):
        tones += list(ts)
        if len(ts) == 2:  # a patterned background blurred: its two tones mixed
            tones.append(tuple((a + b) / 2 for a, b in zip(ts[0], ts[1], strict=False)))
    t = np.asarray(tones, dtype=np.float32)
    levels = (np.arange(256 >> _Q, dtype=np.float32) + 0.5) * (1 << _Q)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    d = ((grid[:, None, :] - t[None, :, :]) ** 2).sum(axis=-1)
    lab = np.argmin(d, axis=1).astype(np.int16)
    lab[lab > _PLATE] = -1
    return lab


def _labels(arr: np.ndarray, bg: str | None) -> np.ndarray:
    """Per pixel: index into colours, _INK, _PLATE, or -1 for background."""
    q = arr.astype(np.uint8) >> _Q
    n = 256 >> _Q
    idx = (q[..., 0].astype(np.int32) * n + q[..., 1]) * n + q[..., 2]
    return _lut(bg)[idx]


def _luma(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    c = mask.shape[0]
    cy, cx = _centroid(mask)
    best, best_iou = "unknown", 0.0
    for shape in scene.SHAPES:
        tmpl = scene.shape_mask(shape, c)
        ty, tx = _centroid(tmpl)
        m = _shift(mask, int(round(ty - cy)), int(round(tx - cx)))
        iou = float((m & tmpl).sum() / max(1, (m | tmpl).sum()))
        if iou > best_iou:
            best, best_iou = shape, iou
    return (best if best_iou >= MIN_SHAPE_IOU else "unknown"), best_iou


def classify_material(fg: np.ndarray, ink: np.ndarray) -> str:
    """plain / striped / dotted / checkered from the ink pixels inside the object's (eroded) mask."""
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(fg, iterations=max(1, fg.shape[0] // 32))
    if inner.sum() < 20:
        inner = fg
    share = float(ink[inner].mean())
    if share < 0.035:
        return "plain"
    inkf = (ink & inner).astype(np.float64)
    rn, cn = inner.sum(axis=1), inner.sum(axis=0)
    rows = inkf.sum(axis=1)[rn >= 3] / rn[rn >= 3]
    cols = inkf.sum(axis=0)[cn >= 3] / cn[cn >= 3]
    row_sd, col_sd = float(np.std(rows)), float(np.std(cols))
    if row_sd > 0.25 and row_sd > 2 * col_sd:
        return "striped"
    if share > 0.3:
        return "checkered"
    return "dotted"


def parse_image(img: Image.Image, size: int, grid: int) -> dict[str, Any]:
    """The scene an image shows: {"background", "bg_share", "objects": [...], "cell_means": {...}}.

    The image is resized to ``size`` if needed. ``background`` is None when no named background
    explains enough of the image; objects are still read, against the union of background tones.
    """
    if img.size != (size, size):
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    bg, share = identify_background(arr)
    lab = _labels(arr, bg)
    luma = _luma(arr)
    c = size // grid
    objects, cell_means = [], {}
    for r in range(grid):
        for col in range(grid):
            sl = (slice(r * c, (r + 1) * c), slice(col * c, (col + 1) * c))
            cl, cp, cy = lab[sl], arr[sl], luma[sl]
            fg = cl >= 0
            if fg.mean() >= MIN_FOREGROUND:  # blurred ink can look like background: fill the holes
                from scipy.ndimage import binary_fill_holes

                fg = binary_fill_holes(fg)
            cell_means[f"{r},{col}"] = cp.reshape(-1, 3).mean(axis=0).tolist()
            if fg.mean() < MIN_FOREGROUND:
                continue
            obj: dict[str, Any] = {"cell": [r, col], "text": "", "fg": float(fg.mean())}
            plate = cl == _PLATE
            if plate.sum() > 0.5 * fg.sum():
                ys, xs = np.nonzero(plate)
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                # Ink is whatever is clearly darker than the plate; blur leaves glyph cores dark.
                ink = np.zeros(plate.shape, dtype=np.float64)
                pl = float(np.median(cy[plate]))
                ink[y0:y1, x0:x1] = np.clip((pl - cy[y0:y1, x0:x1]) / max(1.0, pl - _luma(np.asarray(scene.INK))), 0, 1)
                text = font.read_text(ink, scene.text_scale(c), center=((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2))
                obj.update(shape=scene.SIGN, color="white", material="plain", text=text or "", iou=1.0,
                           mean=cp[plate & (cy >= pl)].mean(axis=0).tolist())
            else:
                shape, iou = classify_shape(fg)
                color = _majority_color(cl, fg, cy)
                if color == "unknown":
                    ink = cl == _INK
                else:  # ink: clearly darker than the object's own colour (robust to blur mixing)
                    lb = float(_luma(np.asarray(scene.COLORS[color], dtype=np.float32)))
                    ink = fg & (cy < (lb + _luma(np.asarray(scene.INK, dtype=np.float32))) / 2)
                # the colour is measured on the bright interior (blur mixes ink into stripe edges)
                base = _bright_core(fg, cy) & (cl == _COLOR_NAMES.index(color)) if color != "unknown" else fg & ~ink
                if not base.any():
                    base = fg & ~ink
                obj.update(shape=shape, color=color, material=classify_material(fg, ink), iou=iou,
                           mean=cp[base].mean(axis=0).tolist() if base.any() else [0.0, 0.0, 0.0])
            objects.append(obj)
    return {"background": bg, "bg_share": share, "objects": objects, "cell_means": cell_means}


def _bright_core(fg: np.ndarray, luma: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    core = binary_erosion(fg, iterations=1)
    if core.sum() < 10:
        core = fg
    return core & (luma >= np.percentile(luma[core], 60))


def _majority_color(cl: np.ndarray, fg: np.ndarray, luma: np.ndarray) -> str:
    """The most common object colour among the object's brightest interior pixels.

    Material ink darkens its neighbours under blur (red + ink looks brown), so only the brighter
    part of the interior, which is pure base colour for every material, is counted.
    """
    from scipy.ndimage import binary_erosion

    core = binary_erosion(fg, iterations=1)
    if core.sum() < 10:
        core = fg
    thr = np.percentile(luma[core], 60)
    vals = cl[core & (luma >= thr)]
    vals = vals[(vals >= 0) & (vals < _INK)]
    if vals.size == 0:
        vals = cl[(cl >= 0) & (cl < _INK)]
    if vals.size == 0:
        return "unknown"
    return _COLOR_NAMES[int(np.bincount(vals, minlength=len(_COLOR_NAMES)).argmax())]
