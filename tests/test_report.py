"""The HTML report: content, escaping, relative/embedded images, and a real render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from results_fixtures import default_scores, make_run

from micebench import report
from micebench.results.cli import report as report_cmd
from micebench.results.run import open_run

EVIL = '<script>alert("x")</script>'


def two_runs(root: Path) -> list[Path]:
    a = make_run(
        root,
        "a",
        n_sessions=6,
        subsets=("cm", "cu"),
        instruction=lambda s, t: f"{EVIL} add a ball" if (s, t) == (0, 1) else f"Add a red ball {t}",
        statuses={(1, 2, "scene_if"): ("unscored", f"judge timed out {EVIL}")},
        edit_errors={(2, 3)},
        scores=default_scores(0.9),
    )
    b = make_run(root, "b", n_sessions=6, subsets=("cm", "cu"), editor=f"ed{EVIL}", scores=default_scores(0.3), seed=4)
    return [a, b]


@pytest.fixture()
def page(tmp_path):
    runs = two_runs(tmp_path)
    out = tmp_path / "site" / "report.html"
    res = CliRunner().invoke(report_cmd, [*map(str, runs), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_everything_from_suites_editors_and_judges_is_escaped(page):
    html = page.read_text()
    assert html.count("<script") == 2  # the page's own two scripts, nothing injected
    assert "alert(" not in html.replace("&lt;script&gt;alert(&quot;x&quot;)", "")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; add a ball" in html
    assert "judge timed out &lt;script&gt;" in html
    assert "ed&lt;script&gt;" in html


def test_page_holds_tables_plots_and_a_strip_per_session_and_run(page):
    html = page.read_text()
    for heading in ("Summary", "Metrics by turn", "Cumulative session success", "By task type", "Sessions"):
        assert f"<h2>{heading}</h2>" in html
    assert html.count('<section class="session') == 6
    assert html.count('class="runcol"') == 12  # two runs side by side in every session
    assert html.count('class="card source"') == 12 and html.count('class="card turn') == 36
    svgs = re.findall(r"<svg class=\"curve\".*?</svg>", html, flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:
        root = ET.fromstring(svg)  # well-formed SVG
        assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2  # one line per run
    session2 = re.search(r'<section class="([^"]*)" id="session-s002"', html).group(1)
    assert "has-fail" in session2  # edit error at turn 3
    session1 = re.search(r'<section class="([^"]*)" id="session-s001"', html).group(1)
    assert "has-unscored" in session1
    assert "editor raised RuntimeError" in html and "judge reasons" in html


def test_images_are_relative_to_the_page_and_exist(page):
    html = page.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert srcs and all(not s.startswith(("/", "file:", "http")) for s in srcs)
    assert all((page.parent / s).is_file() for s in srcs)


def test_embedded_thumbnails_make_a_self_contained_page(tmp_path):
    runs = [open_run(p) for p in two_runs(tmp_path)]
    out = report.write_report(runs, tmp_path / "r.html", embed=True, max_sessions=2)
    html = out.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert html.count('<section class="session') == 2 and "first 2 of 6" in html


def test_missing_image_is_a_placeholder_not_a_broken_link(tmp_path):
    run = two_runs(tmp_path)[0]
    victim = next((run / "images").iterdir())
    victim.unlink()
    html = report.build_html([open_run(run)], tmp_path)
    assert victim.name not in html and "missing" in html


def test_plot_scales_values_outside_unit_interval():
    import pandas as pd

    curve = pd.DataFrame({"turn": [1, 2], "mean": [30.0, 20.0], "ci_low": [28.0, 18.0], "ci_high": [32.0, 22.0],
                          "coverage": [1.0, 1.0]})
    svg = report.curve_svg("pixel_psnr_src", [("a", curve)])
    ET.fromstring(svg)
    assert ">18.00<" in svg and ">32.00<" in svg


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def _browse(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    user_dir = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [_chromium(), *CHROME_FLAGS, f"--user-data-dir={user_dir}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_report_renders_in_headless_chromium(page, tmp_path):
    url = page.resolve().as_uri()
    dom = _browse(tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    root = re.search(r"<html[^>]*>", dom.stdout).group(0)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', root))
    assert attrs.get("self-check") == "done", root
    assert int(attrs["images-total"]) == 12 + 36 - 1 and attrs["images-broken"] == "0"  # one edit has no output
    assert attrs["plots-total"] == "3" and attrs["plots-drawn"] == "3"
    assert "js-errors" not in attrs
    assert _console_lines(dom.stderr) == []
    assert dom.stdout.count("<script") == 2  # the escaped instruction did not become an element

    unfiltered = re.search(r'data-sessions-shown="(\d+)"', dom.stdout)
    assert unfiltered and unfiltered.group(1) == "6"

    shot = tmp_path / "report.png"
    res = _browse(tmp_path, url, f"--screenshot={shot}", "--window-size=1400,1800", "--hide-scrollbars")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert _console_lines(res.stderr) == []
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert pixels.std() > 10  # not a blank page
    for color in (report.PALETTE[0], report.PALETTE[1]):  # both runs' plot lines are on screen
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 30).sum() > 50, color


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_failing_filter_hides_passing_sessions_in_chromium(tmp_path):
    def scores(rng, s, t):
        return {"scene_if": 0.0 if (s, t) == (1, 2) else 1.0, "scene_cc": 0.9}

    run = make_run(tmp_path, "a", n_sessions=4, scores=scores, statuses={(3, 1, "scene_cc"): ("unscored", "no answer")})
    out = report.write_report([open_run(run)], tmp_path / "r.html")
    html = out.read_text()
    classes = re.findall(r'<section class="([^"]*)"', html)
    assert sum("has-fail" in c for c in classes) == 1 and sum("has-unscored" in c for c in classes) == 1
    for fragment, expected in (("", "4"), ("#failing", "1"), ("#unscored", "1")):
        dom = _browse(tmp_path, out.resolve().as_uri() + fragment, "--dump-dom")
        shown = re.search(r'data-sessions-shown="(\d+)"', dom.stdout)
        assert shown and shown.group(1) == expected, (fragment, dom.stderr[-1000:])
        assert _console_lines(dom.stderr) == []


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_chromium_reports_broken_images_when_runs_are_moved(tmp_path):
    run = make_run(tmp_path, "a", n_sessions=2)
    out = report.write_report([open_run(run)], tmp_path / "site" / "r.html")
    shutil.rmtree(run / "images")
    dom = _browse(tmp_path, out.resolve().as_uri(), "--dump-dom")
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<html[^>]*>", dom.stdout).group(0)))
    assert int(attrs["images-broken"]) == int(attrs["images-total"]) > 0
    assert "images did not load" in dom.stdout


def test_big_reports_load_strip_images_lazily(tmp_path):
    small = report.build_html([open_run(make_run(tmp_path, "s", n_sessions=2))], tmp_path)
    assert 'loading="lazy"' not in small
    many = report.LAZY_ABOVE_TURNS // 3 + 1
    big = report.build_html([open_run(make_run(tmp_path, "b", n_sessions=many))], tmp_path)
    assert big.count('loading="lazy"') == many * 4
