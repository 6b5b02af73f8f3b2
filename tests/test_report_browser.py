"""The HTML report in headless Chromium: layout at laptop (1280 px) and desktop (1920 px) width checked in the
DOM and in screenshots, the print layout's page count, the session filter, and broken-image detection.

Skipped with a reason when Debian's ``chromium`` is not installed. Each browser gets a fresh profile and no
network; the layout probe is a small script added to a copy of the page (the report itself is not changed).
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from results_fixtures import five_runs, make_run
from test_report import two_runs

from micebench.results import report, report_plots


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = pytest.mark.skipif(_chromium() is None,
                                reason="needs Debian's chromium package (apt-get install chromium)")

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]

# Measures, after load, what a reader would see: the page's own width against the window's, the boxes of the
# elements that matter, and whether any scroll container or grid cell hides content sideways.
PROBE = """<script>
window.addEventListener("load", function () {
  var root = document.documentElement, vw = root.clientWidth, out = {vw: vw, sw: root.scrollWidth};
  function box(el) { var r = el.getBoundingClientRect();
    return {l: Math.round(r.left), r: Math.round(r.right), t: Math.round(r.top + window.scrollY),
            w: Math.round(r.width), h: Math.round(r.height)}; }
  var watched = {head: ".runs-head .run", summary: "table#summary", plot: "svg.curve", task: ".tasks table",
                 session: ".session", image: ".sgrid .img", label: ".rlabel", legend: ".legend .run"};
  out.boxes = {};
  Object.keys(watched).forEach(function (k) {
    out.boxes[k] = Array.prototype.map.call(document.querySelectorAll(watched[k]), box); });
  var boxed = document.querySelectorAll(".scroll, .sgrid, .sgrid > div, .session, figure");
  out.clipped = Array.prototype.filter.call(boxed, function (el) { return el.scrollWidth > el.clientWidth + 1; })
    .map(function (el) { return el.className; });
  var first = document.querySelector(".session .sgrid");
  out.grid = Array.prototype.map.call(first.querySelectorAll(":scope > div"), box);
  out.cols = Number(getComputedStyle(first).getPropertyValue("--cols")) + 1;
  document.body.setAttribute("data-layout", JSON.stringify(out));
});
</script>"""


def _browse(tmp_path: Path, target: str, *extra: str) -> subprocess.CompletedProcess:
    user_dir = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [_chromium(), *CHROME_FLAGS, f"--user-data-dir={user_dir}", *extra, target]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _root_attrs(dom: str) -> dict[str, str]:
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<html[^>]*>", dom).group(0)))


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    """A five-run side-by-side report (12 sessions x 3 turns each; scene and pixel judges: 11 metrics)."""
    root = tmp_path_factory.mktemp("five")
    return report.write_report(five_runs(root), root / "site" / "report.html")


def _layout(tmp_path: Path, page: Path, width: int) -> dict:
    probe = page.with_name(f"probe-{width}.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _browse(tmp_path, probe.resolve().as_uri(), f"--window-size={width},1000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    found = re.search(r'data-layout="([^"]*)"', dom.stdout)
    assert found, dom.stdout[:2000]
    return json.loads(htmllib.unescape(found.group(1)))


def _colour_count(pixels: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - rgb).sum(axis=-1) < 40).sum())


@pytest.mark.parametrize("width", [1280, 1920])
def test_five_runs_fit_side_by_side_without_horizontal_overflow(five, tmp_path, width):
    lay = _layout(tmp_path, five, width)
    assert lay["vw"] == width and lay["sw"] <= width, lay["sw"]  # the page never scrolls sideways
    assert lay["clipped"] == []  # no table, grid or cell hides content behind a scrollbar
    for kind, boxes in lay["boxes"].items():
        assert boxes, kind
        for b in boxes:
            assert b["w"] > 0 and b["h"] > 0, (kind, b)  # visible
            assert 0 <= b["l"] and b["r"] <= width, (kind, b)  # inside the window
    assert len(lay["boxes"]["head"]) == 5 and len({b["t"] for b in lay["boxes"]["head"]}) <= 2
    plots = lay["boxes"]["plot"]
    assert len(plots) == 12 and min(b["w"] for b in plots) >= 360  # 11 metrics + success, each large enough to read
    assert len({b["t"] for b in plots[:3]}) == 1  # the three metric plots share a row
    # the session grid: runs are rows, turns columns; the same turn of all five runs is in one column
    cols = lay["cols"]
    cells = lay["grid"][cols:]
    assert len(cells) == 5 * cols
    for c in range(cols):
        assert len({cells[r * cols + c]["l"] for r in range(5)}) == 1
    assert min(b["w"] for b in lay["boxes"]["image"]) >= 120  # images big enough to compare
    sessions = lay["boxes"]["session"]
    per_row = sum(1 for b in sessions if b["t"] == sessions[0]["t"])
    assert per_row == (1 if width == 1280 else 2)


@pytest.mark.parametrize("width", [1280, 1920])
def test_screenshots_show_every_run_in_the_plots_and_the_header(five, tmp_path, width):
    lay = _layout(tmp_path, five, width)
    height = max(b["t"] + b["h"] for b in lay["boxes"]["plot"]) + 20
    shot = tmp_path / f"report-{width}.png"
    res = _browse(tmp_path, five.resolve().as_uri(), f"--screenshot={shot}", f"--window-size={width},{height}")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert _console_lines(res.stderr) == []
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[1] == width and img.shape[0] >= height - 1
    head = img[: lay["boxes"]["head"][-1]["t"] + lay["boxes"]["head"][-1]["h"]]
    for i in range(5):
        colour = report_plots.run_style(i).color
        assert _colour_count(head, colour) > 20, ("header", i, colour)  # each run's marker is in the header
        for b in lay["boxes"]["plot"][:3]:
            crop = img[b["t"] : b["t"] + b["h"], b["l"] : b["r"]]
            assert _colour_count(crop, colour) > 30, ("plot", b, i, colour)  # each run is drawn in each plot
    right = img[:, width - 12 :]
    assert right.std() < 8  # the right margin is empty: nothing pokes out of the layout


def _pdf_pages(pdf: Path) -> int:
    if shutil.which("pdfinfo"):
        out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
        return int(re.search(r"Pages:\s+(\d+)", out).group(1))
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf.read_bytes()))


def test_five_run_report_prints_compactly(five, tmp_path):
    pdf = tmp_path / "report.pdf"
    res = _browse(tmp_path, five.resolve().as_uri(), f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert res.returncode == 0 and pdf.is_file(), res.stderr[-2000:]
    pages = _pdf_pages(pdf)
    assert 2 <= pages <= 10, pages  # 44 Letter pages before the print layout; 7 with it
    if shutil.which("pdftoppm"):  # a page of session grids holds two grids side by side, both drawn
        subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", str(pages), "-l", str(pages), str(pdf),
                        str(tmp_path / "last")], check=True)
        page = np.asarray(Image.open(next(tmp_path.glob("last*.png"))).convert("L")).astype(float)
        top = page[: page.shape[0] // 3]
        half = top.shape[1] // 2
        assert top[:, :half].std() > 20 and top[:, half:].std() > 20


def test_report_renders_in_headless_chromium(tmp_path):
    page = report.write_report(two_runs(tmp_path), tmp_path / "site" / "report.html")
    dom = _browse(tmp_path, page.resolve().as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    attrs = _root_attrs(dom.stdout)
    assert attrs.get("self-check") == "done", attrs
    assert int(attrs["images-total"]) == 6 + 36 - 1 and attrs["images-broken"] == "0"  # one edit has no output
    assert attrs["plots-total"] == "4" and attrs["plots-drawn"] == "4"
    assert "js-errors" not in attrs
    assert _console_lines(dom.stderr) == []
    assert dom.stdout.count("<script") == 2  # the escaped instruction did not become an element
    assert attrs["sessions-shown"] == "6"


def test_failing_filter_hides_passing_sessions_in_chromium(tmp_path):
    def scores(rng, s, t):
        return {"scene_if": 0.0 if (s, t) == (1, 2) else 1.0, "scene_cc": 0.9}

    run = make_run(tmp_path, "a", n_sessions=4, scores=scores, statuses={(3, 1, "scene_cc"): ("unscored", "no answer")})
    out = report.write_report([run], tmp_path / "r.html")
    classes = re.findall(r'<section class="([^"]*)"', out.read_text())
    assert sum("has-fail" in c for c in classes) == 1 and sum("has-unscored" in c for c in classes) == 1
    for fragment, expected in (("", "4"), ("#failing", "1"), ("#unscored", "1")):
        dom = _browse(tmp_path, out.resolve().as_uri() + fragment, "--dump-dom")
        assert _root_attrs(dom.stdout).get("sessions-shown") == expected, (fragment, dom.stderr[-1000:])
        assert _console_lines(dom.stderr) == []


def test_chromium_reports_broken_images_when_runs_are_moved(tmp_path):
    run = make_run(tmp_path, "a", n_sessions=2)
    out = report.write_report([run], tmp_path / "site" / "r.html")
    shutil.rmtree(run / "images")
    dom = _browse(tmp_path, out.resolve().as_uri(), "--dump-dom")
    attrs = _root_attrs(dom.stdout)
    assert int(attrs["images-broken"]) == int(attrs["images-total"]) > 0
    assert "images did not load" in dom.stdout
