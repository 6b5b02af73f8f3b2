"""Synthetic scenes: vocabulary, scene graphs, deterministic placement and rendering.

A scene graph is plain JSON data::

    {"size": 256, "grid": 4, "background": "brick", "next_id": 5,
     "objects": [{"id": 1, "shape": "circle", "color": "red", "material": "striped",
                  "cell": [row, col], "text": ""}, ...]}

Objects sit one per cell of a ``grid x grid`` lattice. Signs (shape ``sign``) are white plates that
carry upper-case text in the package's bitmap font. A *kind* is (shape, color, material); several
objects of one kind make a countable group. Rendering uses only numpy and PIL drawing of polygons, so
the same graph gives byte-identical pixels on every machine.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from micebench.synth import font

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (35, 160, 60),
    "teal": (20, 165, 175),
    "blue": (40, 75, 215),
    "purple": (140, 55, 195),
    "pink": (245, 110, 195),
    "brown": (120, 68, 28),
}
INK = (28, 28, 28)  # material patterns and sign text
PLATE = (250, 250, 250)  # sign plates
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIGN = "sign"
MATERIALS = ("plain", "striped", "dotted", "checkered")
# name -> (tone 1, tone 2): plain backgrounds use one tone; patterned ones draw tone 2 over tone 1.
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "grey": ((150, 150, 152),),
    "beige": ((226, 212, 182),),
    "lilac": ((192, 176, 208),),
    "brick": ((176, 108, 92), (214, 204, 194)),
    "grass": ((112, 150, 92), (88, 128, 74)),
    "sky": ((166, 196, 226), (194, 212, 236)),
    "water": ((78, 124, 160), (104, 148, 178)),
    "sand": ((214, 190, 142), (196, 172, 124)),
}
RELATIONS = ("left", "right", "above", "below")
TEXT_WORDS = (
    "OPEN", "SALE", "STOP", "EXIT", "CAFE", "TAXI", "BANK", "PARK", "SHOP", "MENU", "BOOK", "FOOD",
    "GIFT", "HELP", "JAZZ", "ZOO", "BUS", "INN", "SPA", "GYM", "BAR", "ART", "TOYS", "WIFI",
    "RAIN", "SNOW", "SUN", "MOON", "KING", "QUIZ", "VOTE", "WAVE", "YARD", "2024", "42", "UP",
)


def kind(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["shape"], obj["color"], obj["material"])


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "sh", "ch")) else "s")


def kind_name(shape: str, color: str, material: str, count: int = 1) -> str:
    """How instructions name a kind: 'striped red circle', 'blue squares', 'sign'."""
    if shape == SIGN:
        return "sign" if count == 1 else "signs"
    noun = shape if count == 1 else plural(shape)
    words = ([] if material == "plain" else [material]) + [color, noun]
    return " ".join(words)


def obj_name(obj: dict[str, Any], count: int = 1) -> str:
    return kind_name(obj["shape"], obj["color"], obj["material"], count)


def objects_of_kind(graph: dict[str, Any], k: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [o for o in graph["objects"] if kind(o) == k]


def cells(graph: dict[str, Any]) -> list[tuple[int, int]]:
    g = graph["grid"]
    return [(r, c) for r in range(g) for c in range(g)]


def free_cells(graph: dict[str, Any]) -> list[tuple[int, int]]:
    used = {tuple(o["cell"]) for o in graph["objects"]}
    return [rc for rc in cells(graph) if rc not in used]


def relation_holds(cell: tuple[int, int] | list[int], anchor: tuple[int, int] | list[int], relation: str) -> bool:
    """Whether ``cell`` lies ``relation`` of ``anchor`` (strictly, by row/column of the grid)."""
    (r, c), (ar, ac) = cell, anchor
    return {"left": c < ac, "right": c > ac, "above": r < ar, "below": r > ar}[relation]


def place(graph: dict[str, Any], relation: str | None = None, anchor: list[int] | None = None,
          exclude: tuple[tuple[int, int], ...] = ()) -> tuple[int, int] | None:
    """The deterministic free cell where a new or moved object goes (None if none fits).

    With a relation: the free cell satisfying it closest to the anchor, same row/column first. Without:
    the free cell closest to the grid centre. Ties break by row then column. The generator and the
    probe editors share this, so an editor that understood the instruction reproduces the target.
    """
    cands = [rc for rc in free_cells(graph) if rc not in exclude]
    if relation is not None:
        assert anchor is not None
        cands = [rc for rc in cands if relation_holds(rc, anchor, relation)]

        def key(rc: tuple[int, int]) -> tuple[float, int, int]:
            off = abs(rc[0] - anchor[0]) if relation in ("left", "right") else abs(rc[1] - anchor[1])
            return (off * 10 + abs(rc[0] - anchor[0]) + abs(rc[1] - anchor[1]), rc[0], rc[1])
    else:
        mid = (graph["grid"] - 1) / 2

        def key(rc: tuple[int, int]) -> tuple[float, int, int]:
            return (abs(rc[0] - mid) + abs(rc[1] - mid), rc[0], rc[1])

    return min(cands, key=key) if cands else None


def copy_graph(graph: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(graph)


# ----------------------------------------------------------------------------------------- rendering


def cell_size(graph_or_size: dict[str, Any] | int, grid: int = 4) -> int:
    if isinstance(graph_or_size, dict):
        return graph_or_size["size"] // graph_or_size["grid"]
    return graph_or_size // grid


def _polygon(pts: list[tuple[float, float]], c: int) -> np.ndarray:
    """Pixels of a c x c grid whose centres lie inside the polygon (even-odd rule, pure numpy)."""
    yy, xx = np.mgrid[0:c, 0:c] + 0.5
    inside = np.zeros((c, c), dtype=bool)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > yy) != (y2 > yy)
        inside ^= crosses & (xx < (x2 - x1) * (yy - y1) / (y2 - y1) + x1)
    return inside


@lru_cache(maxsize=64)
def shape_mask(shape: str, c: int) -> np.ndarray:
    """Boolean mask (c x c) of a shape drawn in a cell of side ``c`` with a margin.

    Rasterised with numpy at pixel centres (no PIL drawing, no libm calls on pixels), so masks are
    identical on every platform and library version.
    """
    yy, xx = np.mgrid[0:c, 0:c] + 0.5
    m = round(c * 0.14)
    lo, hi, mid = float(m), float(c - m), c / 2
    if shape == "circle":
        r = (hi - lo) / 2
        return (xx - mid) ** 2 + (yy - mid) ** 2 <= r * r
    if shape == "square":
        s = round(c * 0.2)
        return (xx > s) & (xx < c - s) & (yy > s) & (yy < c - s)
    if shape == "triangle":
        base = hi - round(c * 0.06)
        return _polygon([(mid, lo), (hi, base), (lo, base)], c)
    if shape == "diamond":
        return np.abs(xx - mid) + np.abs(yy - mid) <= (hi - lo) / 2
    if shape == "star":
        r_out = (hi - lo) / 2
        pts = []
        for i in range(10):
            r = r_out if i % 2 == 0 else r_out * 0.45
            # vertex angles are fixed; rounding makes the result independent of libm's last bits
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((round(mid + r * math.cos(a), 6), round(mid + 0.06 * c + r * math.sin(a), 6)))
        return _polygon(pts, c)
    if shape == "cross":
        t = c * 0.13
        bar_h = (xx > lo) & (xx < hi) & (np.abs(yy - mid) < t)
        bar_v = (yy > lo) & (yy < hi) & (np.abs(xx - mid) < t)
        return bar_h | bar_v
    if shape == SIGN:
        mx, my = round(c * 0.06), round(c * 0.28)
        return (xx > mx) & (xx < c - mx) & (yy > my) & (yy < c - my)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES + (SIGN,))}")


def text_scale(c: int) -> int:
    return max(1, c // 32)


@lru_cache(maxsize=16)
def material_mask(material: str, c: int) -> np.ndarray:
    """Boolean c x c ink pattern of a material, in cell coordinates (it moves with the object)."""
    yy, xx = np.mgrid[0:c, 0:c]
    p = max(4, round(c / 8))  # stripe / check period half-width
    if material == "plain":
        return np.zeros((c, c), dtype=bool)
    if material == "striped":
        return (yy // p) % 2 == 1
    if material == "checkered":
        return ((yy // p) + (xx // p)) % 2 == 1
    if material == "dotted":
        q = max(6, round(c * 3 / 16))
        r = max(1.5, c / 24)
        dy, dx = (yy % q) - q / 2, (xx % q) - q / 2
        return dy * dy + dx * dx <= r * r
    raise ValueError(f"unknown material {material!r}; expected one of {', '.join(MATERIALS)}")


def render_background(name: str, size: int, grid: int = 4) -> np.ndarray:
    """The background as an HxWx3 uint8 array."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; expected one of {', '.join(BACKGROUNDS)}")
    tones = BACKGROUNDS[name]
    arr = np.empty((size, size, 3), dtype=np.uint8)
    arr[:] = tones[0]
    if len(tones) == 1:
        return arr
    c = size // grid
    yy, xx = np.mgrid[0:size, 0:size]
    t = max(1, c // 32)
    if name == "brick":
        bh, bw = max(4, c // 4), max(8, c // 2)
        row = yy // bh
        off = (row % 2) * (bw // 2)
        pat = (yy % bh < t) | ((xx + off) % bw < t)
    elif name == "grass":
        pat = ((xx + (yy // max(2, c // 8)) * 3) % max(4, c // 8)) < max(1, c // 32)
    elif name == "sky":  # soft bands with a triangle-wave edge (integer arithmetic only)
        period = max(4, c)
        wave = np.abs((xx % period) - period // 2) * max(1, c // 8) // max(1, period // 2)
        pat = (yy + wave) % max(4, c // 2) < max(2, c // 6)
    elif name == "water":
        period = max(4, c // 2)
        wave = np.abs((xx % period) - period // 2) * max(1, c // 16) // max(1, period // 2)
        pat = (yy + wave) % max(4, c // 4) < max(1, c // 16)
    elif name == "sand":
        q = max(3, c // 10)
        pat = ((yy * 7 + xx * 3) % q == 0) | ((yy % q == 1) & (xx % (2 * q) == 3))
    else:  # pragma: no cover - every patterned background is listed above
        raise AssertionError(name)
    arr[pat] = tones[1]
    return arr


def render(graph: dict[str, Any]) -> Image.Image:
    """Render a scene graph to an RGB image (deterministic)."""
    size, grid = graph["size"], graph["grid"]
    c = size // grid
    arr = render_background(graph["background"], size, grid)
    for o in graph["objects"]:
        r, col = o["cell"]
        y, x = r * c, col * c
        region = arr[y : y + c, x : x + c]
        m = shape_mask(o["shape"], c)
        if o["shape"] == SIGN:
            region[m] = PLATE
            text = o.get("text", "")
            if text:
                s = text_scale(c)
                tm = font.text_mask(text, s)
                th, tw = tm.shape
                ty, tx = (c - th) // 2, (c - tw) // 2
                sub = region[ty : ty + th, tx : tx + tw]
                sub[tm] = INK
            continue
        region[m] = COLORS[o["color"]]
        region[m & material_mask(o["material"], c)] = INK
    return Image.fromarray(arr, "RGB")


def validate_graph(graph: dict[str, Any], where: str = "scene") -> None:
    """Raise ValueError naming the problem if ``graph`` is not a well-formed scene graph."""
    for key in ("size", "grid", "background", "objects"):
        if key not in graph:
            raise ValueError(f"{where}: scene graph lacks {key!r}")
    if graph["background"] not in BACKGROUNDS:
        raise ValueError(f"{where}: unknown background {graph['background']!r}")
    seen: set[tuple[int, int]] = set()
    for i, o in enumerate(graph["objects"]):
        cell = tuple(o.get("cell", ()))
        if len(cell) != 2 or not all(0 <= v < graph["grid"] for v in cell):
            raise ValueError(f"{where}: object {i} has a bad cell {o.get('cell')!r}")
        if cell in seen:
            raise ValueError(f"{where}: two objects share cell {cell}")
        seen.add(cell)
        if o.get("shape") not in SHAPES + (SIGN,):
            raise ValueError(f"{where}: object {i} has unknown shape {o.get('shape')!r}")
        if o["shape"] != SIGN and (o.get("color") not in COLORS or o.get("material") not in MATERIALS):
            raise ValueError(f"{where}: object {i} has unknown color/material {o.get('color')!r}/{o.get('material')!r}")
