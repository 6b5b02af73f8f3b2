"""Geometry of the report's plots, computed here and drawn by the page template as inline SVG.

Nothing here writes markup: functions return plain numbers and strings (tooltips, tick labels) that
the Jinja template places into the SVG with autoescaping, so no text from a run reaches the page
unescaped. Promises:

* every run has its own colour (colour-blind-safe palette) *and* marker shape, and runs are offset a
  little along the turn axis, so overlapping runs stay distinguishable in colour and in grey print;
* a higher-is-better score in [0, 1] that measures a MICE axis (IF, CC, GA) is drawn on a fixed 0..1
  axis; other metrics get a "nice" axis around their data (from zero when the data are near it),
  clipped to the metric's declared range;
* a metric with a finite cap that the data reaches (PSNR of identical images is reported as the cap,
  e.g. 100 dB) does not stretch the axis when the other values sit far below it (under 60% of the
  cap): means at the cap are drawn in a separate strip above a break, labelled with the cap, and the
  axis covers the uncapped values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Okabe & Ito's colour-blind-safe palette (yellow left out: unreadable on white), then grey.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#7f7f7f")
MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down", "cross", "hexagon", "star")
UNIT_ROLES = ("if", "cc", "ga")
WIDTH, HEIGHT = 460, 290
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 14, 12, 40
CAP_STRIP = 26  # height of the strip above the axis break that holds capped means


@dataclass(frozen=True)
class RunStyle:
    color: str
    marker: str
    dash: str  # an SVG stroke-dasharray, "" for solid


def run_style(index: int) -> RunStyle:
    """The colour, marker and dash of the ``index``-th run (cycles; dashed once the colours repeat)."""
    n = len(PALETTE)
    return RunStyle(PALETTE[index % n], MARKERS[index % len(MARKERS)], "" if index < n else "6 3")


def marker_path(shape: str, x: float, y: float, r: float = 5.0) -> str:
    """An SVG path ``d`` for a marker of ``shape`` centred on (x, y) with radius about ``r``."""
    if shape == "circle":
        return f"M{x - r:.1f},{y:.1f}a{r},{r} 0 1,0 {2 * r},0a{r},{r} 0 1,0 {-2 * r},0Z"
    if shape == "square":
        s = r * 0.88
        return _polygon(x, y, [(-s, -s), (s, -s), (s, s), (-s, s)])
    if shape == "cross":
        s, w = r, r * 0.35
        pts = [(-w, -s), (w, -s), (w, -w), (s, -w), (s, w), (w, w), (w, s), (-w, s), (-w, w), (-s, w), (-s, -w),
               (-w, -w)]
        return _polygon(x, y, pts)
    corners = {"triangle": (3, -90.0, 1.2), "triangle-down": (3, 90.0, 1.2), "diamond": (4, -90.0, 1.15),
               "hexagon": (6, 0.0, 1.0), "star": (10, -90.0, 1.25)}
    if shape not in corners:
        raise ValueError(f"unknown marker shape {shape!r} (known: {', '.join(MARKERS)})")
    n, start, scale = corners[shape]
    pts = []
    for k in range(n):
        rr = r * scale * (0.5 if shape == "star" and k % 2 else 1.0)
        a = math.radians(start + 360.0 * k / n)
        pts.append((rr * math.cos(a), rr * math.sin(a)))
    return _polygon(x, y, pts)


def _polygon(x: float, y: float, pts: Iterable[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in pts) + "Z"


def nice_step(span: float, n: int = 5) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten that cuts ``span`` into about ``n`` parts."""
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / 10 ** math.floor(math.log10(step)), 6)
                                                           == 2.5 else 0)


@dataclass(frozen=True)
class Axis:
    """A value axis: its bounds, ticks with labels, and the cap drawn above a break (None when none)."""

    lo: float
    hi: float
    ticks: tuple[tuple[float, str], ...]
    cap: float | None = None


def value_axis(values: Sequence[float], *, role: str = "other", value_range: tuple[float | None, float | None] =
               (None, None), cap: float | None = None, higher_is_better: bool = True) -> Axis:
    """The axis for ``values`` (means and CI ends) of a metric with ``role`` and declared ``value_range``.

    A higher-is-better IF / CC / GA score within 0..1 gets the whole 0..1 axis; an error (lower is better,
    e.g. an L1 distance declared as CC) gets a data axis from zero, where its differences are visible.

    ``cap``: a value the judge reports instead of a larger (or infinite) one, e.g. PSNR of identical
    images; when some values sit at the cap and others do not, the cap gets its own strip.
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    r_lo, r_hi = value_range
    if role in UNIT_ROLES and higher_is_better and (r_lo is None or r_lo >= 0) and (r_hi is None or r_hi <= 1) and all(
            0 <= v <= 1 for v in vals):
        return Axis(0.0, 1.0, tuple((t, f"{t:.1f}") for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)))
    below = [v for v in vals if cap is None or v < cap - 1e-9]
    # a strip only pays when the cap is far above the rest (PSNR 100 dB vs 20-35 dB), not for SSIM 1.0 vs 0.85
    capped = cap is not None and cap > 0 and len(below) < len(vals) and bool(below) and max(below) < 0.6 * cap
    if capped:
        vals = below
    if not vals:
        vals = [0.0, 1.0]
    lo, hi = min(vals), max(vals)
    if lo >= 0 and hi > 0 and lo < hi / 2:  # near zero: let the axis start at zero, as a reader expects
        lo = 0.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo)
    a_lo, a_hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    if r_lo is not None:
        a_lo = max(a_lo, r_lo)
    if r_hi is not None and not capped:
        a_hi = min(a_hi, r_hi)
    digits = _decimals(step)
    ticks, k = [], 0
    while (t := a_lo + k * step) <= a_hi + step * 1e-6:
        ticks.append((t, f"{t:.{digits}f}"))
        k += 1
    return Axis(a_lo, a_hi, tuple(ticks), cap if capped else None)


@dataclass(frozen=True)
class Point:
    turn: int
    mean: float
    ci_low: float
    ci_high: float
    tip: str


@dataclass(frozen=True)
class Series:
    label: str
    style: RunStyle
    points: tuple[Point, ...]


def turn_plot(series: Sequence[Series], axis: Axis, turns: Sequence[int]) -> dict:
    """Everything the template needs to draw one metric (or success rate) against the turn index.

    Runs are dodged: run i of n sits ``(i - (n - 1) / 2) * dodge`` turns off its tick, so markers and
    CI whiskers of runs with equal values stand next to each other instead of on top.
    """
    t0, t1 = min(turns), max(turns)
    left, top = MARGIN_LEFT, MARGIN_TOP + (CAP_STRIP if axis.cap is not None else 0)
    pw, ph = WIDTH - MARGIN_LEFT - MARGIN_RIGHT, HEIGHT - top - MARGIN_BOTTOM
    slots = t1 - t0 + 1
    n = max(len(series), 1)
    dodge = min(0.07, 0.45 / n) * (pw / slots)

    def x(t: float) -> float:
        return left + (t - t0 + 0.5) / slots * pw

    def y(v: float) -> float:
        if axis.cap is not None and v >= axis.cap - 1e-9:
            return MARGIN_TOP + CAP_STRIP / 2
        v = min(max(v, axis.lo), axis.hi)
        return top + ph - (v - axis.lo) / (axis.hi - axis.lo) * ph

    out_series = []
    for i, s in enumerate(series):
        off = (i - (n - 1) / 2) * dodge
        pts, line = [], []
        for p in s.points:
            if not math.isfinite(p.mean):
                line.append(None)
                continue
            px, py = x(p.turn) + off, y(p.mean)
            whisker = None
            if math.isfinite(p.ci_low) and math.isfinite(p.ci_high) and (axis.cap is None or p.mean < axis.cap):
                whisker = (round(px, 1), round(y(p.ci_high), 1), round(y(p.ci_low), 1))
            pts.append({"x": round(px, 1), "y": round(py, 1), "d": marker_path(s.style.marker, px, py),
                        "whisker": whisker, "tip": p.tip})
            line.append(f"{px:.1f},{py:.1f}")
        segments = _segments(line)
        out_series.append({"label": s.label, "color": s.style.color, "dash": s.style.dash, "segments": segments,
                           "points": pts})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "plot": {"x": left, "y": top, "w": pw, "h": ph},
        "yticks": [{"y": round(y(v), 1), "label": lbl} for v, lbl in axis.ticks],
        "xticks": [{"x": round(x(t), 1), "label": str(t)} for t in range(t0, t1 + 1)],
        "cap": None if axis.cap is None else {"y": MARGIN_TOP, "h": CAP_STRIP, "label": f"{axis.cap:g}"},
        "series": out_series,
    }


def _segments(line: list[str | None]) -> list[str]:
    """Polyline point lists, broken where a turn has no mean (no line drawn across a gap)."""
    segs, cur = [], []
    for p in [*line, None]:
        if p is None:
            if len(cur) > 1:
                segs.append(" ".join(cur))
            cur = []
        else:
            cur.append(p)
    return segs
