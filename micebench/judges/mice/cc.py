"""Content consistency (CC), PROTOCOL.md section 3.

Reference: the ORIGINAL source image. The output is resized (LANCZOS) to the source size.

- Object term: every box of ``unchanged_objects`` detected in the source (threshold 0.35) is
  cropped at the same normalised place from source and output; similarity =
  0.5 * cos(CLS, CLS) + 0.5 * cos(mean patch token, mean patch token); mean over boxes.
- Background term (only where ``bg_consistency``): the union of the boxes of ``all_objects``
  detected in source and output is masked; the mask is average-pooled onto the patch grid; patches
  whose kept fraction is at least 0.5 are weighted by it; the weighted means of the L2-normalised
  patch tokens of both images are compared by cosine.
- CC = mean of the available terms (object term alone where ``bg_consistency`` is false).

``patch_tokens="real"`` (ours) uses the patch tokens only, on the model's real patch grid.
``patch_tokens="upstream"`` reproduces upstream: every token after CLS (registers included) is a
"patch" and the grid is guessed by factorising their count, so mask and tokens do not line up.

Never a fallback number: no usable term -> :class:`CCUnavailable` with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from micebench.judges.backends.detector import Detector
from micebench.judges.backends.features import FeatureExtractor, PatchFeatures

CC_THRESHOLD = 0.35
BG_WEIGHT_MIN = 0.5


class CCUnavailable(Exception):
    """No CC term could be computed for this turn; the message says why."""


class CCNotApplicable(Exception):
    """CC does not apply to this turn (no unchanged objects listed)."""


@dataclass
class CCResult:
    score: float
    object_term: float | None
    background_term: float | None
    object_sims: list[float] = field(default_factory=list)
    reason: str = ""


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0 if na != nb else 1.0
    return float(np.dot(a, b) / (na * nb))


def _tokens(f: PatchFeatures, mode: str) -> np.ndarray:
    """(n, dim) 'patch' tokens: the real ones, or upstream's everything-after-CLS."""
    flat = f.patches.reshape(-1, f.patches.shape[-1])
    return np.concatenate([f.registers, flat], axis=0) if mode == "upstream" else flat


def crop_similarity(a: PatchFeatures, b: PatchFeatures, mode: str = "real") -> float:
    """0.5 * cos(CLS) + 0.5 * cos(mean patch token): the per-object similarity."""
    return 0.5 * _cos(a.cls, b.cls) + 0.5 * _cos(_tokens(a, mode).mean(0), _tokens(b, mode).mean(0))


def crop_box(image: Any, box: tuple[float, ...]) -> Any:
    """Crop a normalised box (truncated to whole pixels and clipped to the image, as upstream does)."""
    w, h = image.size
    x1, y1, x2, y2 = (int(v * s) for v, s in zip(box, (w, h, w, h), strict=True))
    x1, x2 = max(0, min(x1, w)), max(0, min(x2, w))
    y1, y2 = max(0, min(y1, h)), max(0, min(y2, h))
    return image.crop((x1, y1, x2, y2))


def background_mask(size: tuple[int, int], boxes: list[tuple[float, ...]]) -> np.ndarray:
    """(H, W) float mask: 1 = background kept, 0 = inside some box (pixel corners inclusive, as PIL draws)."""
    w, h = size
    mask = np.ones((h, w), dtype=np.float64)
    for box in boxes:
        x1, y1, x2, y2 = (int(v * s) for v, s in zip(box, (w, h, w, h), strict=True))
        x1, x2 = max(0, min(x1, w)), max(0, min(x2, w))
        y1, y2 = max(0, min(y1, h)), max(0, min(y2, h))
        if x2 >= x1 and y2 >= y1:
            mask[y1 : y2 + 1, x1 : x2 + 1] = 0.0
    return mask


def _upstream_grid(n: int, height: int, width: int) -> tuple[int, int]:
    aspect = height / max(1, width)
    best, grid = None, (1, n)
    for w in range(1, int(math.sqrt(n)) + 1):
        if n % w:
            continue
        h = n // w
        for hh, ww in ((h, w), (w, h)):
            diff = abs(hh / max(1.0, ww) - aspect)
            if best is None or diff < best:
                best, grid = diff, (hh, ww)
    return grid


def pool_mask(mask: np.ndarray, input_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Resize the mask (nearest) to the model input size, then average it onto a rows x cols grid."""
    from PIL import Image

    h, w = input_size
    img = Image.fromarray((mask * 255).astype(np.uint8), mode="L").resize((w, h), Image.NEAREST)
    m = np.asarray(img, dtype=np.float64) / 255.0
    rows, cols = grid
    if h % rows == 0 and w % cols == 0:
        return m.reshape(rows, h // rows, cols, w // cols).mean(axis=(1, 3))
    ys = np.linspace(0, h, rows + 1).astype(int)
    xs = np.linspace(0, w, cols + 1).astype(int)
    return np.array(
        [[m[ys[i] : max(ys[i + 1], ys[i] + 1), xs[j] : max(xs[j + 1], xs[j] + 1)].mean() for j in range(cols)]
         for i in range(rows)]
    )


def masked_similarity(a: PatchFeatures, b: PatchFeatures, mask: np.ndarray, mode: str = "real") -> tuple[float, int]:
    """Cosine of the weighted means of L2-normalised patch tokens; returns (similarity, patches used)."""
    ta, tb = _tokens(a, mode), _tokens(b, mode)
    grid = a.grid if mode == "real" else _upstream_grid(ta.shape[0], *a.input_size)
    weights = pool_mask(mask, a.input_size, grid).reshape(-1)
    weights = np.clip(weights, 0.0, 1.0)
    weights = np.where(weights >= BG_WEIGHT_MIN, weights, 0.0)
    used = int((weights > 0).sum())
    if used == 0:
        raise CCUnavailable("the detected objects cover the whole image: no background patch left")
    na = ta / np.maximum(np.linalg.norm(ta, axis=1, keepdims=True), 1e-8)
    nb = tb / np.maximum(np.linalg.norm(tb, axis=1, keepdims=True), 1e-8)
    fa = (na * weights[:, None]).sum(0) / (weights.sum() + 1e-6)
    fb = (nb * weights[:, None]).sum(0) / (weights.sum() + 1e-6)
    return _cos(fa, fb), used


def compute_cc(
    source: Any,
    output: Any,
    unchanged: tuple[str, ...] | list[str],
    all_objects: tuple[str, ...] | list[str],
    bg_consistency: bool,
    detector: Detector,
    features: FeatureExtractor,
    patch_tokens: str = "real",
) -> CCResult:
    """CC of one turn; raises :class:`CCNotApplicable` or :class:`CCUnavailable` instead of guessing."""
    from PIL import Image

    from micebench.images import as_rgb_image

    if not unchanged:
        raise CCNotApplicable("no unchanged_objects listed for this turn")
    src = as_rgb_image(source, "CC source")
    out = as_rgb_image(output, "CC output")
    if out.size != src.size:
        out = out.resize(src.size, Image.LANCZOS)
    notes = []
    obj_boxes = detector.detect(src, list(unchanged), CC_THRESHOLD)
    sims: list[float] = []
    if obj_boxes:
        crops_src = [crop_box(src, d.box) for d in obj_boxes]
        crops_out = [crop_box(out, d.box) for d in obj_boxes]
        valid = [i for i, c in enumerate(crops_src) if c.width > 0 and c.height > 0]
        if valid:
            feats = features.encode([crops_src[i] for i in valid] + [crops_out[i] for i in valid])
            k = len(valid)
            sims = [crop_similarity(feats[i], feats[k + i], patch_tokens) for i in range(k)]
    object_term = float(np.mean(sims)) if sims else None
    if object_term is None:
        notes.append(f"none of the unchanged objects detected in the source at {CC_THRESHOLD}")
    background_term = None
    if bg_consistency:
        boxes = [d.box for d in detector.detect(src, list(all_objects), CC_THRESHOLD)] if all_objects else []
        boxes += [d.box for d in detector.detect(out, list(all_objects), CC_THRESHOLD)] if all_objects else []
        if not boxes:
            notes.append("no object of all_objects detected: background term unavailable")
        else:
            fa, fb = features.encode([src, out])
            try:
                background_term, _ = masked_similarity(fa, fb, background_mask(src.size, boxes), patch_tokens)
            except CCUnavailable as e:
                notes.append(str(e))
    terms = [t for t in (object_term, background_term) if t is not None]
    if not terms:
        raise CCUnavailable("; ".join(notes) or "no CC term available")
    parts = []
    if object_term is not None:
        parts.append(f"object {object_term:.4f} over {len(sims)} box(es)")
    if background_term is not None:
        parts.append(f"background {background_term:.4f}")
    return CCResult(
        score=float(np.mean(terms)),
        object_term=object_term,
        background_term=background_term,
        object_sims=sims,
        reason="; ".join(parts + notes),
    )
