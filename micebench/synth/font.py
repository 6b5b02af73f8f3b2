"""A 5x7 bitmap font drawn for micebench (upper-case A-Z and 0-9), and template-matching text reading.

The font ships as data in this module (no TTF, no FreeType), so text renders byte-identically on every
machine and the scene judge can read it back by matching glyph templates. Each glyph is 7 rows of 5
cells; ``#`` is ink.
"""

from __future__ import annotations

import numpy as np

GLYPH_W, GLYPH_H = 5, 7

_GLYPHS_SRC = {
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
}


def _parse(src: str) -> np.ndarray:
    rows = src.split("|")
    if len(rows) != GLYPH_H or any(len(r) != GLYPH_W for r in rows):
        raise ValueError(f"bad glyph source {src!r}")
    return np.array([[ch == "#" for ch in r] for r in rows], dtype=bool)


GLYPHS: dict[str, np.ndarray] = {ch: _parse(s) for ch, s in _GLYPHS_SRC.items()}
ALPHABET = "".join(sorted(GLYPHS))


def text_width(text: str, scale: int) -> int:
    """Width in pixels of ``text`` drawn at ``scale`` (one glyph column gap between letters)."""
    n = len(text)
    return n * GLYPH_W * scale + max(0, n - 1) * scale


def text_mask(text: str, scale: int) -> np.ndarray:
    """A boolean ink mask of ``text`` (HxW = 7*scale x text_width)."""
    bad = [c for c in text if c not in GLYPHS]
    if bad:
        raise ValueError(f"text {text!r} has characters the bitmap font lacks: {''.join(bad)!r}")
    out = np.zeros((GLYPH_H * scale, text_width(text, scale)), dtype=bool)
    x = 0
    for ch in text:
        g = np.kron(GLYPHS[ch], np.ones((scale, scale), dtype=bool))
        out[:, x : x + g.shape[1]] = g
        x += (GLYPH_W + 1) * scale
    return out


def read_text(ink: np.ndarray, scale: int, center: tuple[float, float] | None = None) -> str | None:
    """Read the characters of an ink mask (bool, or 0..1 float) drawn by :func:`text_mask`.

    The glyph count comes from the ink's width; the text box is centred on ``center`` (e.g. the
    sign plate's centre, where text is drawn) or on the ink, and nudged by up to one pixel each way
    to the best fit. Each glyph is matched against every glyph of the font at 5x7 resolution.
    Returns None when there is no ink.
    """
    ink = np.asarray(ink, dtype=np.float64)
    ys, xs = np.nonzero(ink > 0.5)
    if len(xs) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pitch = (GLYPH_W + 1) * scale
    n = max(1, int(round((x1 - x0 + scale) / pitch)))
    full_w, full_h = text_width("X" * n, scale), GLYPH_H * scale
    cy, cx = center if center is not None else ((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2)
    h, w = ink.shape
    pad = max(full_w, full_h) + 2
    padded = np.zeros((h + 2 * pad, w + 2 * pad))
    padded[pad : pad + h, pad : pad + w] = ink
    # Glyphs at full resolution, centred and normalised: matching by correlation tolerates blur,
    # which spreads ink into neighbouring pixels and lowers its contrast.
    full = np.stack([np.kron(GLYPHS[ch], np.ones((scale, scale))) for ch in ALPHABET]).reshape(len(ALPHABET), -1)
    full = full - full.mean(axis=1, keepdims=True)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    best_text, best_score = "", -float("inf")
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            left = int(round(cx - (full_w - 1) / 2)) + dx + pad
            top = int(round(cy - (full_h - 1) / 2)) + dy + pad
            region = padded[top : top + full_h, left : left + full_w]
            chars, total = [], 0.0
            for i in range(n):
                cell = region[:, i * pitch : i * pitch + GLYPH_W * scale].reshape(-1)
                cell = cell - cell.mean()
                norm = float(np.linalg.norm(cell))
                corr = full @ cell / (norm if norm > 0 else 1.0)
                k = int(corr.argmax())
                chars.append(ALPHABET[k])
                total += float(corr[k])
            if total > best_score:
                best_text, best_score = "".join(chars), total
    return best_text
