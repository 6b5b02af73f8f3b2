"""A static HTML report of one or more runs (no server, no network, no JS library).

The page holds: the runs compared; a summary table (mean, 95% CI, coverage per metric); per metric an
inline-SVG plot of the mean against the turn index, one line (and CI band) per run; cumulative session
success; per-task-type tables side by side; and for every session a strip source -> turn 1 -> turn 2
... per run, runs side by side, with the instruction, the effective instruction, the scores and the
judges' reasons. A selector shows only failing (or unscored) turns.

Promises: every string that comes from a suite, an editor, a judge or a manifest is HTML-escaped;
images are referenced by a path relative to the HTML file (or embedded as small thumbnails with
``embed=True``); a turn *fails* when its edit did not succeed or a score of a metric whose role is IF or
GA (as the judge's MetricSpec says) is below the threshold (above it, for a lower-is-better metric); it
is *unscored* when any of its metrics is unscored or not run.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from micebench.results import aggregate as tables
from micebench.results.run import ResultsError, Run, open_run
from micebench.spec import MetricSpec

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
FAIL_ROLES = ("if", "ga")
THUMB = 192
LAZY_ABOVE_TURNS = 300


@dataclass(frozen=True)
class RunData:
    """What the page needs of a :class:`Run`, read once: its folder, manifest (as a dict), per-turn table,
    label and metric specs."""

    path: Path
    manifest: dict
    turns: pd.DataFrame
    label: str
    specs: dict[str, MetricSpec]

    @classmethod
    def of(cls, run: Run | str | Path) -> RunData:
        run = open_run(run)
        return cls(run.root, run.manifest.model_dump(mode="json"), run.turns(), run.label, run.metric_specs())


def _fails_on(metric: str, specs: dict[str, MetricSpec]) -> bool:
    spec = specs.get(metric)
    return spec is not None and spec.role in FAIL_ROLES


def _e(value: object) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return escape("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value), quote=True)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


class _Images:
    """Turns an image hash of a run into an <img> src: a relative path, or a base64 thumbnail."""

    def __init__(self, out_dir: Path, embed: bool, lazy: bool = False) -> None:
        self.out_dir, self.embed, self.lazy = out_dir.resolve(), embed, lazy

    def src(self, run: RunData, digest: str) -> str | None:
        if not digest:
            return None
        path = (run.path / "images" / f"{digest}.png").resolve()
        if not path.is_file():
            return None
        if self.embed:
            from PIL import Image

            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((THUMB, THUMB))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=80)
            return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        return quote(Path(os.path.relpath(path, self.out_dir)).as_posix())


def curve_svg(metric: str, curves: list[tuple[str, pd.DataFrame]], width: int = 380, height: int = 230,
              higher_is_better: bool = True) -> str:
    """An SVG line plot of ``metric`` against turn index: one line with a CI band per (label, by_turn rows)."""
    pts = [(lbl, c.dropna(subset=["mean"])) for lbl, c in curves]
    values = np.concatenate([np.r_[c["mean"], c["ci_low"].dropna(), c["ci_high"].dropna()] for _, c in pts] or [[]])
    turns = np.concatenate([c["turn"].to_numpy() for _, c in pts] or [[]])
    if not len(values):
        return f'<p class="muted">{_e(metric)}: no scored turns</p>'
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    t0, t1 = int(turns.min()), int(turns.max())
    ml, mr, mt, mb = 44, 12, 24, 30
    pw, ph = width - ml - mr, height - mt - mb

    def x(t: float) -> float:
        return ml + (pw / 2 if t1 == t0 else (t - t0) / (t1 - t0) * pw)

    def y(v: float) -> float:
        return mt + ph - (v - lo) / (hi - lo) * ph

    parts = [
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(metric)} by turn">',
        f'<text x="{ml}" y="15" font-size="13" font-weight="600">{_e(metric)}'
        f'{"" if higher_is_better else " (lower is better)"}</text>',
    ]
    for v in np.linspace(lo, hi, 5):
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{ml - 5}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.2f}</text>')
    for t in range(t0, t1 + 1):
        parts.append(f'<text x="{x(t):.1f}" y="{mt + ph + 16}" font-size="10" text-anchor="middle">{t}</text>')
    parts.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 2}" font-size="10" text-anchor="middle">turn</text>')
    parts.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for i, (label, c) in enumerate(pts):
        color = PALETTE[i % len(PALETTE)]
        band = c.dropna(subset=["ci_low", "ci_high"])
        if len(band) > 1:
            upper = [f"{x(t):.1f},{y(v):.1f}" for t, v in zip(band["turn"], band["ci_high"], strict=True)]
            lower = [f"{x(t):.1f},{y(v):.1f}" for t, v in zip(band["turn"], band["ci_low"], strict=True)][::-1]
            parts.append(f'<polygon points="{" ".join(upper + lower)}" fill="{color}" fill-opacity="0.15"/>')
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(c["turn"], c["mean"], strict=True))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        for r in c.itertuples():
            tip = f"{label}: turn {r.turn}: {_fmt(r.mean)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] cov {r.coverage:.0%}"
            dot = f'<circle cx="{x(r.turn):.1f}" cy="{y(r.mean):.1f}" r="3.5" fill="{color}">'
            parts.append(f"{dot}<title>{_e(tip)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _legend(runs: list[RunData]) -> str:
    items = "".join(
        f'<span><i class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></i>{_e(r.label)}</span>'
        for i, r in enumerate(runs)
    )
    return f'<p class="legend">{items}</p>'


def _stat_cell(r: pd.Series) -> str:
    ci = "" if not np.isfinite(r["ci_low"]) else f' <span class="ci">[{_fmt(r["ci_low"])}, {_fmt(r["ci_high"])}]</span>'
    cov = f'<span class="cov">cov {r["coverage"]:.0%}</span>' if np.isfinite(r["coverage"]) else ""
    return f'<td class="num">{_fmt(r["mean"])}{ci}<br>{cov}</td>'


def _runs_table(runs: list[RunData]) -> str:
    head = "<tr><th>run</th><th>editor</th><th>config hash</th><th>suite</th><th>judges</th><th>created</th>"
    head += "<th>sessions</th><th>turns</th><th>edit errors</th></tr>"
    rows = []
    for r in runs:
        m, df = r.manifest, r.turns
        suite, editor = m.get("suite") or {}, m.get("editor") or {}
        judges = ", ".join(f"{j.get('key') or j.get('name')}@{j.get('version', '')}" for j in m.get("judges") or [])
        rows.append(
            f"<tr><td>{_e(m.get('run_id', r.path.name))}</td><td>{_e(editor.get('name'))}</td>"
            f"<td>{_e(editor.get('config_hash'))}</td><td>{_e(suite.get('name'))}@{_e(suite.get('version'))}</td>"
            f"<td>{_e(judges)}</td><td>{_e(m.get('created'))}</td><td class='num'>{df['session_id'].nunique()}</td>"
            f"<td class='num'>{len(df)}</td><td class='num'>{int((df['status'] != 'ok').sum())}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _summary_table(runs: list[RunData], overall: list[pd.DataFrame], metrics: list[str]) -> str:
    head = "<tr><th>run</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics) + "</tr>"
    rows = []
    for run, table in zip(runs, overall, strict=True):
        by = table.set_index("metric")
        cells = "".join(_stat_cell(by.loc[m]) if m in by.index else "<td>-</td>" for m in metrics)
        rows.append(f"<tr><td>{_e(run.label)}</td>{cells}</tr>")
    return f"<div class=\"scroll\"><table>{head}{''.join(rows)}</table></div>"


def _group_table(long: pd.DataFrame, index: str, title: str) -> str:
    metrics = list(dict.fromkeys(long["metric"]))
    head = f"<tr><th>{_e(index)}</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics) + "</tr>"
    rows = []
    for key, part in long.groupby(index, sort=True):
        by = part.set_index("metric")
        rows.append(f"<tr><td>{_e(key)}</td>" + "".join(_stat_cell(by.loc[m]) for m in metrics) + "</tr>")
    return f'<div><h3>{_e(title)}</h3><table>{head}{"".join(rows)}</table></div>'


def _success_table(run: RunData, threshold: float, n_boot: int) -> str:
    succ = tables.cumulative_success(run.turns, None, threshold, specs=run.specs, n_boot=n_boot)
    if succ.empty:
        return ""
    long = succ.rename(columns={"success": "mean"})
    return _group_table(long, "turn", f"{run.label}: cumulative success (>= {threshold:g})")


def _turn_flags(row: pd.Series, metrics: list[str], threshold: float,
                specs: dict[str, MetricSpec]) -> tuple[bool, bool]:
    """(fails, unscored) of one per-turn row; see the module docstring."""
    fail = row["status"] != "ok"
    unscored = False
    for m in metrics:
        st = str(row[f"{m}_status"])
        unscored |= st in ("unscored", "not_run")
        if st == "ok" and _fails_on(m, specs) and np.isfinite(row[m]):
            fail |= (row[m] < threshold) if tables.higher_is_better(m, specs) else (row[m] > threshold)
    return bool(fail), bool(unscored)


def _image(src: str | None, alt: str, lazy: bool = False) -> str:
    if src is None:
        return f'<div class="noimg">{_e(alt)}</div>'
    return f'<img src="{_e(src)}" alt="{_e(alt)}" loading="{"lazy" if lazy else "eager"}">'


def _turn_card(
    run: RunData, row: pd.Series, metrics: list[str], images: _Images, threshold: float
) -> tuple[str, bool, bool]:
    """(card html, fails, unscored) of one turn."""
    fail, unscored = _turn_flags(row, metrics, threshold, run.specs)
    cls = "card turn" + (" fail" if fail else "") + (" unscored" if unscored else "")
    t = int(row["turn"])
    out = row.get("output_hash") or ""
    img = _image(images.src(run, out), "no output" if not out else "image file missing", images.lazy)
    parts = [f'<div class="{cls}">{img}<div class="head">Turn {t} · {_e(row.get("task_type"))}</div>']
    parts.append(f'<div class="instr">{_e(row.get("instruction"))}</div>')
    eff = row.get("effective_instruction")
    if isinstance(eff, str) and eff and eff != row.get("instruction"):
        parts.append(f'<div class="instr eff" title="effective instruction">→ {_e(eff)}</div>')
    if row["status"] != "ok":
        parts.append(f'<div class="err">{_e(row["status"])}: {_e(row.get("error"))}</div>')
    score_rows, reasons = [], []
    for m in metrics:
        st = str(row[f"{m}_status"])
        if st == "ok":
            bad = _fails_on(m, run.specs) and _turn_flags(row, [m], threshold, run.specs)[0] and row["status"] == "ok"
            val, cls_v = _fmt(row[m]), "s-fail" if bad else ""
        else:
            val, cls_v = st.replace("_", " "), f"s-{st}"
        score_rows.append(f'<tr><td>{_e(m)}</td><td class="num {cls_v}">{_e(val)}</td></tr>')
        reason = row.get(f"{m}_reason")
        if isinstance(reason, str) and reason:
            reasons.append(f"<div><b>{_e(m)}</b>: {_e(reason)}</div>")
    parts.append(f'<table class="scores">{"".join(score_rows)}</table>')
    if reasons:
        parts.append(f'<details class="reasons"><summary>judge reasons</summary>{"".join(reasons)}</details>')
    parts.append("</div>")
    return "".join(parts), fail, unscored


def _session_block(sid: str, runs: list[RunData], groups: list[dict], images: _Images, metrics: list[list[str]],
                   threshold: float) -> str:
    cols, any_fail, any_unscored, subset = [], False, False, ""
    for run, grp, mets in zip(runs, groups, metrics, strict=True):
        rows = grp.get(sid)
        if rows is None:
            cols.append(f'<div class="runcol"><div class="label">{_e(run.label)}</div>'
                        '<p class="muted">not in this run</p></div>')
            continue
        rows = rows.sort_values("turn")
        first = rows.iloc[0]
        subset = subset or str(first.get("subset", "") or "")
        source = _image(images.src(run, first.get("input_hash") or ""), "source missing", images.lazy)
        cards = [f'<div class="card source">{source}'
                 f'<div class="head">Source</div></div>']
        for _, row in rows.iterrows():
            card, fail, unscored = _turn_card(run, row, mets, images, threshold)
            cards.append(card)
            any_fail |= fail
            any_unscored |= unscored
        cols.append(f'<div class="runcol"><div class="label">{_e(run.label)}</div>'
                    f'<div class="strip">{"".join(cards)}</div></div>')
    cls = "session" + (" has-fail" if any_fail else "") + (" has-unscored" if any_unscored else "")
    title = f"Session {_e(sid)}" + (f' <span class="muted">({_e(subset)})</span>' if subset else "")
    return (f'<section class="{cls}" id="session-{_e(sid)}"><h3>{title}</h3>'
            f'<div class="runs">{"".join(cols)}</div></section>')


def build_html(runs: list[Run | RunData | str | Path], out_dir: Path, *, embed: bool = False,
               threshold: float = 0.5, max_sessions: int | None = None, n_boot: int = 500, seed: int = 0) -> str:
    """The report page as a string; ``out_dir`` is where it will live (image paths are relative to it)."""
    if not runs:
        raise ResultsError("report: no runs given")
    runs = [r if isinstance(r, RunData) else RunData.of(r) for r in runs]
    # big reports load strip images lazily (as they scroll into view); small ones load everything at once
    images = _Images(out_dir, embed, lazy=sum(len(r.turns) for r in runs) > LAZY_ABOVE_TURNS)
    metrics = [tables.metric_columns(r.turns) for r in runs]
    all_metrics = list(dict.fromkeys(m for ms in metrics for m in ms))
    kw = {"n_boot": n_boot, "seed": seed}
    overall = [tables.overall(r.turns, ms, **kw) for r, ms in zip(runs, metrics, strict=True)]
    per_turn = [tables.by_turn(r.turns, ms, **kw) for r, ms in zip(runs, metrics, strict=True)]
    title = "micebench report: " + " vs ".join(r.label for r in runs)
    body = [f"<h1>{_e(title)}</h1>", '<div id="broken-banner" class="banner hidden"></div>']
    body += ["<h2>Runs</h2>", _runs_table(runs)]
    body += ["<h2>Summary</h2>", '<p class="muted">mean [95% CI, sessions resampled] · coverage = scored / '
             "applicable turns</p>", _summary_table(runs, overall, all_metrics)]
    body += ["<h2>Metrics by turn</h2>", _legend(runs), '<div class="plots">']
    for m in all_metrics:
        curves = [(r.label, pt[pt["metric"] == m]) for r, pt in zip(runs, per_turn, strict=True)]
        hib = next((r.specs[m].higher_is_better for r in runs if m in r.specs), True)
        body.append(f'<div class="plot">{curve_svg(m, curves, higher_is_better=hib)}</div>')
    body.append("</div>")
    succ = [_success_table(r, threshold, n_boot) for r in runs]
    if any(succ):
        body += ["<h2>Cumulative session success</h2>", f'<div class="side">{"".join(succ)}</div>']
    body.append("<h2>By task type</h2><div class=\"side\">")
    for r, ms in zip(runs, metrics, strict=True):
        if ms:
            body.append(_group_table(tables.by_task_type(r.turns, ms, **kw), "task_type", r.label))
    body.append("</div>")
    groups = [{str(k): g for k, g in r.turns.groupby(r.turns["session_id"].astype(str))} for r in runs]
    session_ids = sorted(set().union(*groups))
    shown = session_ids[:max_sessions] if max_sessions is not None else session_ids
    body.append("<h2>Sessions</h2>")
    body.append(
        '<div class="controls"><label>Show <select id="turn-filter"><option value="all">all sessions</option>'
        '<option value="fail">sessions with failing turns</option><option value="unscored">sessions with unscored '
        f"turns</option></select></label> · <span id=\"shown-count\">{len(shown)}</span> of {len(shown)} sessions "
        f'shown{f" (first {len(shown)} of {len(session_ids)})" if len(shown) < len(session_ids) else ""}'
        f" · a turn fails on an edit error or an IF / GA score below {threshold:g}</div>"
    )
    for sid in shown:
        body.append(_session_block(sid, runs, groups, images, metrics, threshold))
    return page_html(title, "\n".join(body))


def page_html(title: str, body: str) -> str:
    from micebench.report_assets import page_template

    return page_template().substitute(title=escape(title), body=body)


def write_report(runs: list[Run | RunData | str | Path], output: str | Path, **kw) -> Path:
    """Write the report to ``output`` (folders created); returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_html(runs, output.parent, **kw), encoding="utf-8")
    return output
