"""Content consistency as the Edit-R2 reward server and client compute it (``protocol=upstream``).

Differences from the strict :mod:`micebench.judges.mice.cc`, all on purpose:

- both images arrive as JPEG quality 75; the detector sees a second JPEG hop;
- an empty ``unchanged_objects`` or ``all_objects`` gives 0.5 (the client's fallback);
- the mean patch token of a crop and the background tokens are "every token after CLS" (register
  tokens included), on a grid guessed from their count, so mask and tokens do not line up;
- the mask is pooled onto that grid by block averaging when the input divides evenly, else by
  area interpolation (adaptive average pooling);
- when no patch keeps at least half its area, the background similarity is 0.0 and is averaged
  in, not dropped; when the mask covers every pixel the term is missing;
- a crop the feature model cannot encode is skipped; a background computation that fails makes
  the term missing; no term at all gives 0.5; ``bg_consistency`` false uses the object term alone
  (0.5 without one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from micebench.judges.mice.cc import _tokens, _upstream_grid, crop_box, crop_similarity
from micebench.judges.mice.upstream_if import jpeg_round_trip

CC_THRESHOLD = 0.35
BG_WEIGHT_MIN = 0.5
FALLBACK = 0.5


@dataclass
class UpstreamCC:
    score: float
    reason: str


def _mask(size: tuple[int, int], boxes: list[tuple[float, ...]]) -> np.ndarray:
    """Upstream's background mask: 255 everywhere, each clipped integer box filled with 0 (PIL rectangle)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    for box in boxes:
        x1, y1, x2, y2 = (max(0, min(int(v * s), s)) for v, s in zip(box, (w, h, w, h), strict=True))
        draw.rectangle([x1, y1, x2, y2], fill=0)
    return np.asarray(img, dtype=np.float32) / 255.0


def pool_mask_upstream(mask: np.ndarray, input_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Nearest resize to the model input, then block means when the grid divides it, else adaptive average
    pooling (cell i spans floor(i*H/n) to ceil((i+1)*H/n)), as torch's ``interpolate(mode='area')``."""
    from PIL import Image

    h, w = input_size
    rows, cols = grid
    img = Image.fromarray(np.round(mask * 255).astype(np.uint8), mode="L").resize((w, h), Image.NEAREST)
    m = np.asarray(img, dtype=np.float32) / 255.0
    if h % rows == 0 and w % cols == 0:
        return m.reshape(rows, h // rows, cols, w // cols).mean(axis=(1, 3))
    out = np.empty((rows, cols), dtype=np.float64)
    for i in range(rows):
        y0, y1 = (i * h) // rows, math.ceil((i + 1) * h / rows)
        for j in range(cols):
            x0, x1 = (j * w) // cols, math.ceil((j + 1) * w / cols)
            out[i, j] = m[y0:y1, x0:x1].mean()
    return out


def background_similarity_upstream(fa, fb, mask: np.ndarray) -> float:
    """Weighted-mean cosine of the L2-normalised tokens after CLS; 0.0 when every weight is below 0.5."""
    ta, tb = _tokens(fa, "upstream"), _tokens(fb, "upstream")
    grid = _upstream_grid(ta.shape[0], *fa.input_size)
    weights = np.clip(pool_mask_upstream(mask, fa.input_size, grid).reshape(-1), 0.0, 1.0)
    weights = np.where(weights >= BG_WEIGHT_MIN, weights, 0.0)
    na = ta / np.maximum(np.linalg.norm(ta, axis=1, keepdims=True), 1e-8)
    nb = tb / np.maximum(np.linalg.norm(tb, axis=1, keepdims=True), 1e-8)
    fa_ = (na * weights[:, None]).sum(0) / (weights.sum() + 1e-6)
    fb_ = (nb * weights[:, None]).sum(0) / (weights.sum() + 1e-6)
    denom = max(float(np.linalg.norm(fa_) * np.linalg.norm(fb_)), 1e-8)  # torch cosine_similarity's eps
    return float(np.dot(fa_, fb_) / denom)


def compute_cc_upstream(source: Any, output: Any, unchanged: list[str] | tuple[str, ...],
                        all_objects: list[str] | tuple[str, ...], bg_consistency: bool, detector: Any,
                        features: Any) -> UpstreamCC:  # fmt: skip
    """CC of one turn with upstream's numbers; raises only when the images themselves cannot be used."""
    from PIL import Image

    if not unchanged or not all_objects:
        which = "unchanged_objects" if not unchanged else "all_objects"
        return UpstreamCC(FALLBACK, f"upstream: empty {which} -> {FALLBACK}")
    src, out = jpeg_round_trip(source), jpeg_round_trip(output)  # client -> server
    if out.size != src.size:
        out = out.resize(src.size, Image.LANCZOS)
    notes: list[str] = []

    def detect(image: Any, phrases: list[str]) -> list[tuple[float, ...]]:
        try:
            found = sorted(detector.detect(jpeg_round_trip(image), list(phrases), CC_THRESHOLD), key=lambda d: d.index)
        except Exception as e:  # upstream: a failed detector call finds nothing
            notes.append(f"detector failed ({type(e).__name__}) -> nothing found")
            return []
        return [d.box for d in found]

    obj_boxes = detect(src, list(unchanged))
    all_src, all_out = (detect(src, list(all_objects)), detect(out, list(all_objects))) if bg_consistency else ([], [])
    sims = []
    for box in obj_boxes:
        try:
            fa, fb = features.encode([crop_box(src, box), crop_box(out, box)])
            sims.append(crop_similarity(fa, fb, "upstream"))
        except Exception as e:  # upstream skips a crop the feature model fails on
            notes.append(f"crop skipped ({type(e).__name__})")
    object_term = float(np.mean(sims)) if sims else None
    background = None
    boxes = all_src + all_out
    # Upstream computes the background term either way and the client then ignores it when
    # bg_consistency is false; skipping it changes no number.
    if boxes and bg_consistency:
        mask = _mask(src.size, boxes)
        if mask.sum() > 0:
            try:
                fa, fb = features.encode([src, out])
                background = background_similarity_upstream(fa, fb, mask)
            except Exception as e:  # upstream: the term is missing
                notes.append(f"background failed ({type(e).__name__}) -> missing")
        else:
            notes.append("objects cover every pixel -> background missing")
    parts = [f"object {object_term:.4f} over {len(sims)} box(es)" if object_term is not None else "no object term"]
    if bg_consistency:
        parts.append(f"background {background:.4f}" if background is not None else "no background term")
    if not bg_consistency:
        terms = [object_term] if object_term is not None else []
        parts.append("bg_consistency false: object term only")
    else:
        terms = [t for t in (object_term, background) if t is not None]
    if terms:
        score = sum(terms) / len(terms)
    else:
        score = FALLBACK
        notes.append(f"no term -> {FALLBACK}")
    reason = "; ".join(parts)
    if notes:
        reason += "; upstream: " + "; ".join(dict.fromkeys(notes))
    return UpstreamCC(float(score), reason)
