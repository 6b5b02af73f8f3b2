"""The HTML report's content: escaping, what the header and plots say, metric meaning, comparability warnings,
images. Layout in a real browser is tested in test_report_browser.py."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from results_fixtures import JUDGES, default_scores, five_runs, make_run

from micebench.results import report, report_plots, report_sessions
from micebench.results.cli import report as report_cmd
from micebench.results.errors import ResultsError
from micebench.results.report_runs import read_run
from micebench.results.run import open_run

EVIL = '<script>alert("x")</script>'
SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[1]


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


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg class=\"curve\".*?</svg>", html, flags=re.S)]


def test_everything_from_suites_editors_and_judges_is_escaped(page):
    html = page.read_text()
    assert html.count("<script") == 2  # the page's own two scripts, nothing injected
    assert "alert(" not in html.replace("&lt;script&gt;alert(&#34;x&#34;)", "")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; add a ball" in html
    assert "judge timed out &lt;script&gt;" in html
    assert "ed&lt;script&gt;" in html


def test_header_names_runs_by_editor_and_the_run_ids_live_in_the_runs_table(page):
    html = page.read_text()
    head = re.search(r'<div class="runs-head">(.*?)</div>', html, flags=re.S).group(1)
    names = re.findall(r"<span class=\"run\">.*?<span>(.*?)</span></span>", head, flags=re.S)
    assert names == ["synth-context", "ed&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"]
    assert ">a<" not in head and ">b<" not in head  # run ids are not in the header
    assert '<td class="mono">a</td>' in html and '<td class="mono">b</td>' in html
    assert "suite synth@1 · 6 sessions" in html  # what both share is said once


def test_page_holds_tables_plots_and_a_grid_per_session(page):
    html = page.read_text()
    for heading in ("Summary", "Metrics by turn", "Cumulative session success", "By task type", "Sessions"):
        assert f"<h2>{heading}</h2>" in html
    assert html.count('<section class="session') == 6
    assert html.count('class="rlabel"') == 12  # one row per run in every session
    assert len(re.findall(r'<div class="cell[ "]', html)) == 36
    svgs = _svgs(html)
    assert len(svgs) == 4  # IF, CC, GA by turn + cumulative success of IF
    for svg in svgs:
        series = svg.findall(f"{SVG}g")
        assert len(series) == 2 and all(g.findall(f"{SVG}polyline") for g in series)  # one line per run
    session2 = re.search(r'<section class="([^"]*)" id="session-s002"', html).group(1)
    assert "has-fail" in session2  # edit error at turn 3
    session1 = re.search(r'<section class="([^"]*)" id="session-s001"', html).group(1)
    assert "has-unscored" in session1
    assert "editor raised RuntimeError" in html and "judge reasons" in html


def _shape(d: str) -> tuple:
    """A marker path's outline relative to its bounding box centre (so equal shapes at other places compare equal)."""
    pts = np.array([float(v) for v in re.findall(r"-?\d+\.?\d*", d)]).reshape(-1, 2)
    if "a" in d:  # a circle: its radius is all there is
        return ("circle", round(float(pts[1, 0]), 1))
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    return tuple(np.round(pts - centre, 1).ravel())


def test_overlapping_runs_differ_in_marker_and_position(tmp_path):
    runs = [make_run(tmp_path, f"r{i}", editor=f"ed{i}", scores=lambda rng, s, t: {"x_if": 1.0}) for i in range(5)]
    html = report.build_html(runs, tmp_path)
    svg = _svgs(html)[0]
    groups = svg.findall(f"{SVG}g")
    assert len(groups) == 5
    first_marker = [g.find(f"{SVG}path[@class='pt']") for g in groups]
    shapes = {_shape(p.get("d")) for p in first_marker}
    assert len(shapes) == 5  # five different marker shapes
    colours = {p.get("fill") for p in first_marker}
    assert len(colours) == 5
    xs = [float(re.match(r"M([-\d.]+)", p.get("d")).group(1)) for p in first_marker]
    assert len(set(xs)) == 5  # identical values, yet no two markers on the same spot


def test_unit_scores_use_a_zero_to_one_axis():
    axis = report_plots.value_axis([0.61, 0.72, 0.8], role="if", value_range=(0, 1))
    assert (axis.lo, axis.hi) == (0.0, 1.0) and axis.cap is None


def test_psnr_at_its_cap_gets_a_strip_instead_of_stretching_the_axis():
    axis = report_plots.value_axis([100.0, 100.0, 27.4, 31.2, 24.9], value_range=(0, 100), cap=100.0)
    assert axis.cap == 100.0
    assert 20 <= axis.lo <= 24.9 and 31.2 <= axis.hi <= 35  # the axis covers the uncapped means only
    labels = [lbl for _, lbl in axis.ticks]
    assert labels[0] == f"{axis.lo:.0f}" and len(labels) >= 4
    plot = report_plots.turn_plot([report_plots.Series("id", report_plots.run_style(0), (
        report_plots.Point(1, 100.0, 100.0, 100.0, "id"),)), report_plots.Series("ed", report_plots.run_style(1), (
            report_plots.Point(1, 27.4, 25.0, 29.0, "ed"),))], axis, [1])
    capped_y = plot["series"][0]["points"][0]["y"]
    assert capped_y < plot["plot"]["y"]  # drawn in the strip above the axis break
    assert plot["plot"]["y"] <= plot["series"][1]["points"][0]["y"] <= plot["plot"]["y"] + plot["plot"]["h"]


def test_a_cap_close_to_the_data_stays_on_the_axis():
    axis = report_plots.value_axis([0.8, 0.85, 1.0], value_range=(-1, 1), cap=1.0)  # SSIM of an identity editor
    assert axis.cap is None and axis.hi == 1.0 and axis.lo >= 0.7


def test_psnr_without_capped_values_and_small_errors_get_nice_data_axes():
    axis = report_plots.value_axis([27.4, 31.2, 24.9], value_range=(0, 100), cap=100.0)
    assert axis.cap is None and axis.lo >= 20 and axis.hi <= 35
    l1 = report_plots.value_axis([0.051, 0.1, 0.152], value_range=(0, 1))
    assert l1.lo == 0.0 and 0.152 <= l1.hi <= 0.2  # starts at zero, not stretched to the declared range
    assert [lbl for _, lbl in l1.ticks][:3] == ["0.00", "0.05", "0.10"]


def test_cumulative_success_is_a_plot_on_a_unit_axis(page):
    html = page.read_text()
    section = html.split("<h2>Cumulative session success</h2>")[1].split("<h2>")[0]
    svgs = _svgs(section)
    assert len(svgs) == 1
    ticks = [t.text for t in svgs[0].iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks[:6] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert "scene_if ≥ 0.5" in section


def _pixel_run(root: Path, name: str, editor: str, psnr: float, specs: bool) -> Path:
    def scores(rng, s, t):
        return {"scene_if": 1.0, "pixel_psnr_src": psnr if psnr else float(rng.normal(28, 1))}

    pix = {"name": "pixel", "key": "pixel-1", "version": "1", "metrics": ["psnr_src"], "config": {"psnr_cap": 60.0},
           "prompt_hash": ""}
    if specs:
        pix["metric_specs"] = [{"name": "psnr_src", "role": "cc", "higher_is_better": True, "range": [0, 60.0],
                                "description": "PSNR"}]
    return make_run(root, name, editor=editor, scores=scores, judges=[{**JUDGES[0], "metrics": ["if"]}, pix])


@pytest.mark.parametrize("specs", [True, False])
def test_capped_psnr_of_an_identity_editor_is_drawn_in_the_cap_strip(tmp_path, specs):
    runs = [_pixel_run(tmp_path, "a", "synth-context", 0.0, specs), _pixel_run(tmp_path, "b", "identity", 60.0, specs)]
    html = report.build_html(runs, tmp_path)
    fig = re.search(r'<figure class="plot"><figcaption><span class="mname">pixel_psnr_src</span>.*?</figure>', html,
                    flags=re.S).group(0)
    assert "means at the cap (60)" in fig  # the cap comes from the spec, or the judge's psnr_cap for old runs
    ticks = [float(t) for t in re.findall(r'class="tick"[^>]*>([\d.]+)<', fig)]
    assert max(ticks) == 60 and sorted(ticks)[-2] < 35


def test_declared_metric_specs_decide_role_and_direction_not_the_name(tmp_path):
    def scores(rng, s, t):
        return {"judge_drift": 0.9 if s == 0 else 0.1}

    spec = {"name": "drift", "role": "ga", "higher_is_better": False, "range": [0, 1], "description": "how far"}
    judge = {"name": "judge", "key": "judge-1", "version": "1", "metrics": ["drift"], "config": {},
             "metric_specs": [spec]}
    run = make_run(tmp_path, "a", n_sessions=2, scores=scores, judges=[judge])
    info = read_run(run).metrics["judge_drift"]
    assert (info.role, info.higher_is_better, info.declared) == ("ga", False, True)
    old = make_run(tmp_path, "old", n_sessions=2, scores=scores, judges=[{k: v for k, v in judge.items()
                                                                           if k != "metric_specs"}])
    guessed = read_run(old).metrics["judge_drift"]  # an old manifest of an unknown judge: guessed from the name
    assert (guessed.role, guessed.higher_is_better, guessed.declared) == ("other", True, False)
    html = report.build_html([run], tmp_path)
    classes = dict(re.findall(r'<section class="([^"]*)" id="session-(s\d+)"', html)[::1])
    assert {v: k for k, v in classes.items()} == {"s000": "session has-fail", "s001": "session"}
    assert "global awareness" in html and '<span class="dir" title="lower is better">↓</span>' in html


def test_runs_of_one_editor_are_told_apart_by_config_then_run_id(tmp_path):
    a = make_run(tmp_path, "a", config_hash="aaaa1111")
    b = make_run(tmp_path, "b", config_hash="bbbb2222")
    html = report.build_html([a, b], tmp_path)
    assert "synth-context (aaaa1111)" in html and "synth-context (bbbb2222)" in html
    c = make_run(tmp_path, "c", config_hash="aaaa1111")
    html = report.build_html([a, c], tmp_path)
    assert "synth-context (a)" in html and "synth-context (c)" in html


def test_runs_of_one_suite_and_judge_config_carry_no_warning(tmp_path):
    html = report.build_html(five_runs(tmp_path, n_sessions=3), tmp_path)
    assert 'id="comparability-warning"' not in html


def test_different_suites_and_judge_configs_are_warned_about(tmp_path):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", suite_version="2", editor="other",
                 judges=[{**JUDGES[0], "metrics": ["if", "cc", "ga"], "config": {"votes": 3}}])
    html = report.build_html([a, b], tmp_path)
    warning = re.search(r'<div class="banner warn" id="comparability-warning".*?</div>', html, flags=re.S).group(0)
    assert "different suites" in warning and "synth@1" in warning and "synth@2" in warning
    assert "Judge &#39;scene&#39; ran with different" in warning and "&#34;votes&#34;: 3" in warning


def test_partial_overlap_of_sessions_is_warned_about(tmp_path):
    html = report.build_html([make_run(tmp_path, "a", n_sessions=4), make_run(tmp_path, "b", n_sessions=2,
                                                                                editor="x")], tmp_path)
    assert "cover different sessions" in html and "2 in common" in html


def test_images_are_relative_to_the_page_and_exist(page):
    html = page.read_text()
    srcs = re.findall(r'<img class="img" src="([^"]+)"', html)
    assert len(srcs) == 6 + 36 - 1  # one source per session (shared by both runs), one edit without output
    assert all(not s.startswith(("/", "file:", "http")) for s in srcs)
    assert all((page.parent / s).is_file() for s in srcs)


def test_embedded_thumbnails_make_a_self_contained_page(tmp_path):
    runs = [open_run(p) for p in two_runs(tmp_path)]
    out = report.write_report(runs, tmp_path / "r.html", embed=True, max_sessions=2)
    html = out.read_text()
    srcs = re.findall(r'<img class="img" src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert html.count('<section class="session') == 2 and "first 2 of 6" in html


def test_missing_image_is_a_placeholder_not_a_broken_link(tmp_path):
    run = two_runs(tmp_path)[0]
    victim = next((run / "images").iterdir())
    victim.unlink()
    html = report.build_html([run], tmp_path)
    assert victim.name not in html and "missing" in html


def test_big_reports_load_grid_images_lazily(tmp_path):
    small = report.build_html([make_run(tmp_path, "s", n_sessions=2)], tmp_path)
    assert 'loading="lazy"' not in small
    many = report.LAZY_ABOVE_TURNS // 3 + 1
    big = report.build_html([make_run(tmp_path, "b", n_sessions=many)], tmp_path)
    assert big.count('loading="lazy"') == many * 4


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="no runs"):
        report.build_html([], tmp_path)


def test_template_ships_as_package_data_and_jinja2_is_a_dependency():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    assert resources.files("micebench.results").joinpath(report.TEMPLATE).is_file()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = meta["tool"]["setuptools"]["package-data"]
    assert any(fnmatch(report.TEMPLATE, g) for key in ("*", "micebench.results") for g in globs.get(key, []))
    assert any(re.match(r"jinja2\b", d, flags=re.I) for d in meta["project"]["dependencies"])


def test_marker_shapes_are_closed_paths_inside_their_box():
    for shape in report_plots.MARKERS:
        d = report_plots.marker_path(shape, 50, 50, 5)
        assert d.endswith("Z")
        nums = np.array([float(v) for v in re.findall(r"-?\d+\.?\d*", d.split("a")[0])])
        assert np.all(np.abs(nums - 50) <= 7)
    with pytest.raises(ValueError, match="unknown marker"):
        report_plots.marker_path("blob", 0, 0)


def test_an_error_declared_as_cc_gets_a_data_axis_not_zero_to_one():
    axis = report_plots.value_axis([0.031, 0.062, 0.09], role="cc", value_range=(0, 1), higher_is_better=False)
    assert axis.lo == 0.0 and 0.09 <= axis.hi <= 0.1


def test_each_metric_gets_decimals_for_its_magnitude():
    assert report_sessions.digits_for([26.04, 100.0]) == 1  # PSNR in dB
    assert report_sessions.digits_for([0.694, 0.139]) == 3  # a 0..1 score
    assert report_sessions.digits_for([0.00454, 0.0]) == 5  # a small L2: 0.00454, not 0.005
    assert report_sessions.digits_for([float("nan")]) == 3


def test_cells_show_one_if_cc_and_ga_metric_and_fold_the_rest(tmp_path):
    runs = five_runs(tmp_path, n_sessions=2)[:2]
    html = report.build_html(runs, tmp_path)
    cell = re.search(r'<div class="cell[ "].*?</details>', html, flags=re.S).group(0)
    under_image = re.findall(r'<span class="nm">([^<]+)</span>', cell)
    assert under_image == ["scene_if", "scene_cc", "scene_ga"]
    folded = cell.split("<details")[1]
    assert "pixel_psnr_src" in folded and "pixel_ssim_prev" in folded
    assert "Under each image: scene_if · scene_cc · scene_ga" in html
    summary = html.split('id="summary"')[1].split("</table>")[0]
    small = [m for m in re.findall(r'<span class="mean">([\d.]+)</span>', summary) if 0 < float(m) < 0.01]
    assert small and all(len(m.replace(".", "").lstrip("0")) == 3 for m in small)  # 0.00454, not 0.005
