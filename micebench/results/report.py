"""A static HTML report of one or more runs: one file, no server, no network, no JS library.

The page (template ``report.html.j2`` beside this module, rendered by Jinja2 with autoescaping, so
every string from a suite, an editor, a judge or a manifest is escaped) holds:

* a header naming the runs by editor, with each run's colour and marker, and a warning when the runs
  evaluate different suites, ran judges with different configurations, or cover different sessions;
* a summary table (runs as rows; IF, CC, GA and other metrics as columns; mean, 95% CI, coverage);
* per metric a plot of the mean against the turn index (see :mod:`report_plots`), and cumulative
  session success as a plot and a table;
* per metric a table by task type, runs side by side;
* per session a grid: runs as rows, turns as columns, with images, scores and the judges' reasons.

Images are referenced by a path relative to the page, or embedded as small thumbnails with
``embed=True``. A print stylesheet lays the same page out compactly (plots three to a row, small
session grids two to a row).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from micebench.results import aggregate
from micebench.results import report_plots as plots
from micebench.results.errors import ResultsError
from micebench.results.report_runs import (
    ROLE_NAMES,
    MetricInfo,
    ReportRun,
    comparability_warnings,
    label_runs,
    ordered_metrics,
    read_run,
    run_facts,
)
from micebench.results.report_sessions import CellView, Images, cell_metrics, digits_for, fmt, session_grids

LAZY_ABOVE_TURNS = 300
TEMPLATE = "report.html.j2"


def _stat(row: pd.Series | None, digits: int = 3) -> dict[str, Any]:
    """A table cell: the mean with ``digits`` decimals, its CI with one fewer, coverage when below 100%."""
    if row is None:
        return {"mean": "-", "ci": "", "cov": "", "low_cov": False, "value": math.nan}
    d = max(digits - 1, 1)
    ci = "" if not math.isfinite(row["ci_low"]) else f"[{fmt(row['ci_low'], d)}, {fmt(row['ci_high'], d)}]"
    cov = float(row["coverage"])
    return {"mean": fmt(row["mean"], digits), "ci": ci, "cov": f"{cov:.0%}" if math.isfinite(cov) else "",
            "low_cov": math.isfinite(cov) and cov < 0.999, "value": float(row["mean"])}


def _best(values: list[float], higher: bool) -> set[int]:
    """Indices of the best finite value(s) of a column (only marked when there is more than one run)."""
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if len(values) < 2 or len(finite) < 2:
        return set()
    best = max(v for v, _ in finite) if higher else min(v for v, _ in finite)
    return {i for v, i in finite if v == best}


def _metric_head(m: MetricInfo) -> dict[str, Any]:
    return {"name": m.column, "role": m.role, "role_name": ROLE_NAMES.get(m.role, m.role),
            "arrow": "↑" if m.higher_is_better else "↓", "direction": "higher is better" if m.higher_is_better
            else "lower is better", "description": m.description, "declared": m.declared}


def _summary(runs: list[ReportRun], metrics: list[MetricInfo], overall: list[pd.DataFrame],
             digits: dict[str, int]) -> dict[str, Any]:
    cells = []
    for table in overall:
        by = table.set_index("metric")
        cells.append([_stat(by.loc[m.column] if m.column in by.index else None, digits[m.column]) for m in metrics])
    for j, m in enumerate(metrics):
        for i in _best([row[j]["value"] for row in cells], m.higher_is_better):
            cells[i][j]["best"] = True
    groups = []
    for m in metrics:
        if groups and groups[-1]["role"] == m.role:
            groups[-1]["span"] += 1
        else:
            groups.append({"role": m.role, "name": ROLE_NAMES.get(m.role, m.role), "span": 1})
    return {"metrics": [_metric_head(m) for m in metrics], "groups": groups,
            "rows": [{"index": i, "label": r.label, "cells": c} for i, (r, c) in enumerate(zip(runs, cells,
                                                                                               strict=True))]}


def _tip(label: str, what: str, r: pd.Series, value: str, d: int) -> str:
    ci = f" [{fmt(r['ci_low'], d)}, {fmt(r['ci_high'], d)}]" if math.isfinite(r["ci_low"]) else ""
    return f"{label}, turn {int(r['turn'])}: {what} {fmt(r[value], d)}{ci}, coverage {r['coverage']:.0%}"


def _curve(runs: list[ReportRun], parts: list[pd.DataFrame], value: str, what: str, d: int) -> list[plots.Series]:
    series = []
    for i, (run, part) in enumerate(zip(runs, parts, strict=True)):
        pts = tuple(plots.Point(int(r["turn"]), float(r[value]), float(r["ci_low"]), float(r["ci_high"]),
                                _tip(run.label, what, r, value, d)) for _, r in part.sort_values("turn").iterrows())
        series.append(plots.Series(run.label, plots.run_style(i), pts))
    return series


def _plot(m: MetricInfo, series: list[plots.Series], title: str, unit: bool = False) -> dict[str, Any]:
    values = [v for s in series for p in s.points for v in (p.mean, p.ci_low, p.ci_high)]
    turns = [p.turn for s in series for p in s.points if math.isfinite(p.mean)]
    head = _metric_head(m)
    if not turns:
        return {**head, "title": title, "empty": True}
    axis = plots.value_axis(values, role="if" if unit else m.role, value_range=(0, 1) if unit else m.range,
                            cap=None if unit else m.cap, higher_is_better=unit or m.higher_is_better)
    return {**head, "title": title, "empty": False, "svg": plots.turn_plot(series, axis, turns), "cap": axis.cap}


def _success(runs: list[ReportRun], metrics: list[MetricInfo], threshold: float, kw: dict) -> list[dict[str, Any]]:
    out = []
    for m in metrics:
        if m.role != "if":
            continue
        parts = []
        for r in runs:
            if m.column in r.metrics:
                parts.append(aggregate.cumulative_success(r.turns, [m.column], threshold, specs=r.specs, **kw))
            else:
                parts.append(pd.DataFrame(columns=["turn", "success", "ci_low", "ci_high", "coverage"]))
        comparison = "≥" if m.higher_is_better else "≤"
        plot = _plot(m, _curve(runs, parts, "success", "success", 3),
                     f"sessions passing every turn so far: {m.column} {comparison} {threshold:g}", unit=True)
        turns = sorted({int(t) for p in parts for t in p["turn"]})
        rows = []
        for i, (r, p) in enumerate(zip(runs, parts, strict=True)):
            by = p.set_index("turn")
            rows.append({"index": i, "label": r.label, "cells": [
                _stat(by.loc[t].rename({"success": "mean"})) if t in by.index else _stat(None) for t in turns]})
        out.append({"plot": plot, "turns": turns, "rows": rows})
    return out


def _by_task(runs: list[ReportRun], metrics: list[MetricInfo], digits: dict[str, int], kw: dict) -> list[dict]:
    long = [aggregate.by_task_type(r.turns, [m.column for m in metrics if m.column in r.metrics], **kw) for r in runs]
    out = []
    for m in metrics:
        parts = [t[t["metric"] == m.column].set_index("task_type") for t in long]
        tasks = sorted({str(k) for p in parts for k in p.index})
        rows = []
        for task in tasks:
            cells = [_stat(p.loc[task], digits[m.column]) if task in p.index else _stat(None) for p in parts]
            for i in _best([c["value"] for c in cells], m.higher_is_better):
                cells[i]["best"] = True
            rows.append({"task": task, "cells": cells})
        out.append({**_metric_head(m), "rows": rows})
    return out


def _legend(runs: list[ReportRun]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(runs):
        s = plots.run_style(i)
        out.append({"index": i, "label": r.label, "color": s.color, "dash": s.dash,
                    "marker": plots.marker_path(s.marker, 9, 9, 5.5)})
    return out


def build_html(runs: list[Any], out_dir: Path, *, embed: bool = False, threshold: float = 0.5,
               max_sessions: int | None = None, n_boot: int = 500, seed: int = 0) -> str:
    """The report page as a string. ``runs``: run directories or :class:`~micebench.results.run.Run` objects;
    ``out_dir``: where the page will live (image paths are relative to it)."""
    if not runs:
        raise ResultsError("report: no runs given")
    runs = [r if isinstance(r, ReportRun) else read_run(r) for r in runs]
    label_runs(runs)
    metrics = ordered_metrics(runs)
    per_run = [[m for m in metrics if m.column in r.metrics] for r in runs]
    kw = {"n_boot": n_boot, "seed": seed}
    overall = [aggregate.overall(r.turns, [m.column for m in ms], **kw) for r, ms in zip(runs, per_run, strict=True)]
    per_turn = [aggregate.by_turn(r.turns, [m.column for m in ms], **kw) for r, ms in zip(runs, per_run, strict=True)]
    # one number format per metric, over all runs: 26.1 dB, 0.806, 0.00412
    digits = {m.column: digits_for(pd.concat([o.loc[o["metric"] == m.column, "mean"] for o in overall]))
              for m in metrics}
    curves = []
    for m in metrics:
        series = _curve(runs, [pt[pt["metric"] == m.column] for pt in per_turn], "mean", m.column, digits[m.column])
        curves.append(_plot(m, series, f"{m.column} by turn"))
    # big reports load grid images lazily (as they scroll into view); small ones load everything at once
    images = Images(out_dir, embed, lazy=sum(len(r.turns) for r in runs) > LAZY_ABOVE_TURNS)
    shown = cell_metrics(metrics)
    grids, n_sessions = session_grids(runs, per_run, CellView(shown, digits, threshold, images), max_sessions)
    max_turns = max((len(g["turns"]) for g in grids), default=1)
    context = {
        "title": "micebench report: " + " vs ".join(r.label for r in runs),
        "legend": _legend(runs),
        "facts": [run_facts(r) for r in runs],
        "common": _common(runs),
        "warnings": comparability_warnings(runs),
        "summary": _summary(runs, metrics, overall, digits),
        "curves": curves,
        "success": _success(runs, metrics, threshold, kw),
        "by_task": _by_task(runs, metrics, digits, kw),
        "cell_metrics": shown,
        "sessions": grids,
        "n_sessions": n_sessions,
        "max_turns": max_turns,
        "threshold": threshold,
        "lazy": images.lazy,
        "n_runs": len(runs),
    }
    return _template().render(**context)


def _common(runs: list[ReportRun]) -> str:
    """What all runs share, said once under the title (suite, sessions, turns)."""
    facts = [run_facts(r) for r in runs]
    bits = []
    for key, fmt_ in (("suite", "suite {}"), ("sessions", "{} sessions"), ("judges", "judges {}")):
        values = {f[key] for f in facts}
        if len(values) == 1 and (v := next(iter(values))):
            bits.append(fmt_.format(v))
    return " · ".join(bits)


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("micebench.results", ""),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE)


def write_report(runs: list[Any], output: str | Path, **kw: Any) -> Path:
    """Write the report to ``output`` (folders created); returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_html(runs, output.parent, **kw), encoding="utf-8")
    return output
