"""The session grids of the report: per session, one row per run and one column per turn.

The same turn of every run sits in one column, under the turn's instruction (written once when all
runs share it), and the session's source image heads the label column, so runs are compared by
looking down a column. A turn *fails* on an edit error or an IF / GA score on the wrong side of the
threshold; it is *unscored* when any of its metrics is unscored or not run.
"""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from micebench.results.report_runs import MetricInfo, ReportRun

THUMB = 192
Row = dict[str, Any]  # one row of the per-turn table
FAIL_ROLES = ("if", "ga")


class Images:
    """Turns an image hash of a run into an <img> src: a path relative to the page, or a base64 thumbnail."""

    def __init__(self, out_dir: Path, embed: bool, lazy: bool = False) -> None:
        self.out_dir, self.embed, self.lazy = out_dir.resolve(), embed, lazy

    def src(self, run: ReportRun, digest: Any) -> str | None:
        if not isinstance(digest, str) or not digest:
            return None
        path = run.run.image_path(digest).resolve()
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


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals ('-' for missing)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return f"{v:.{digits}f}" if math.isfinite(v) else "-"


def digits_for(values: Any) -> int:
    """Decimals that show a metric's values (one column, all runs) to about three significant digits: 1 for
    PSNR-like values of 10 and more, 3 for 0..1 scores, more for small errors (an L2 of 0.004 -> 0.00412)."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    if top >= 10:
        return 1
    if top >= 0.1 or top == 0:
        return 3
    return min(6, 2 - math.floor(math.log10(top)))


def _number(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def turn_fails(row: Row, info: MetricInfo, threshold: float) -> bool:
    """Whether a scored IF / GA cell is on the failing side of ``threshold``."""
    if info.role not in FAIL_ROLES or str(row.get(f"{info.column}_status")) != "ok":
        return False
    v = _number(row.get(info.column))
    if not math.isfinite(v):
        return False
    return v < threshold if info.higher_is_better else v > threshold


def _cell(run: ReportRun, row: Row, metrics: list[MetricInfo], view: CellView,
          show_instruction: bool) -> dict[str, Any]:
    edit_ok = row["status"] == "ok"
    fail, unscored, scores, folded = not edit_ok, False, [], []
    threshold, images = view.threshold, view.images
    for m in metrics:
        st = str(row.get(f"{m.column}_status"))
        unscored |= st in ("unscored", "not_run")
        bad = turn_fails(row, m, threshold)
        fail |= bad
        value = fmt(row.get(m.column), view.digits.get(m.column, 3)) if st == "ok" else st.replace("_", " ")
        entry = {"name": m.column, "value": value, "cls": "s-fail" if bad else ("" if st == "ok" else f"s-{st}")}
        (scores if m.column in view.shown else folded).append(entry)
        reason = row.get(f"{m.column}_reason")
        if isinstance(reason, str) and reason:
            folded.append({"name": m.column, "value": "", "reason": reason, "cls": ""})
    out_hash = row.get("output_hash")
    eff = row.get("effective_instruction")
    instr = row.get("instruction")
    return {
        "turn": int(row["turn"]),
        "src": images.src(run, out_hash),
        "missing": "no output" if not (isinstance(out_hash, str) and out_hash) else "image file missing",
        "fail": bool(fail),
        "unscored": bool(unscored),
        "error": "" if edit_ok else f"{row['status']}: {row.get('error') or ''}",
        "instruction": _text(instr) if show_instruction else "",
        "effective": _text(eff) if isinstance(eff, str) and eff and eff != instr else "",
        "scores": scores,
        "folded": folded,
    }


def _text(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


@dataclass(frozen=True)
class CellView:
    """How a grid cell is drawn: which metrics show under the image (the rest fold away with the judges'
    reasons), their decimals, what fails, and where images come from."""

    shown: tuple[str, ...]
    digits: dict[str, int]
    threshold: float
    images: Images


def cell_metrics(metrics: list[MetricInfo]) -> tuple[str, ...]:
    """The metrics under each image: the first IF, CC and GA metric (in table order), else the first three."""
    firsts = {}
    for m in metrics:
        if m.role in ("if", "cc", "ga"):
            firsts.setdefault(m.role, m.column)
    return tuple(firsts[r] for r in ("if", "cc", "ga") if r in firsts) or tuple(m.column for m in metrics[:3])


def session_grid(sid: str, runs: list[ReportRun], groups: list[dict[str, list[Row]]],
                 metrics: list[list[MetricInfo]], view: CellView) -> dict[str, Any]:
    """The grid of one session (see the module docstring)."""
    present = [(i, g[sid]) for i, g in enumerate(groups) if sid in g]
    turns = sorted({int(r["turn"]) for _, rows in present for r in rows})
    head: dict[int, dict[str, Any]] = {}
    for t in turns:
        at = [r for _, rows in present for r in rows if int(r["turn"]) == t]
        instrs = {_text(r.get("instruction")) for r in at}
        tasks = {_text(r.get("task_type")) for r in at}
        head[t] = {"turn": t, "task": " / ".join(sorted(tasks)), "instruction": next(iter(instrs)) if
                   len(instrs) == 1 else "", "shared": len(instrs) == 1}
    sources = {i: rows[0].get("input_hash") for i, rows in present}
    shared_source = len(set(sources.values())) == 1
    first = present[0] if present else None
    rows_out, any_fail, any_unscored, subset = [], False, False, ""
    for i, run in enumerate(runs):
        rows = groups[i].get(sid)
        row_out: dict[str, Any] = {"index": i, "label": run.label, "cells": {}, "present": rows is not None,
                                   "source": None if shared_source else view.images.src(run, sources.get(i))}
        if rows is not None:
            subset = subset or _text(rows[0].get("subset"))
            for r in rows:
                cell = _cell(run, r, metrics[i], view, not head[int(r["turn"])]["shared"])
                row_out["cells"][cell["turn"]] = cell
                any_fail |= cell["fail"]
                any_unscored |= cell["unscored"]
        rows_out.append(row_out)
    source = view.images.src(runs[first[0]], sources[first[0]]) if first and shared_source else None
    return {"id": sid, "subset": subset, "turns": [head[t] for t in turns], "rows": rows_out,
            "source": source, "shared_source": shared_source, "fail": any_fail, "unscored": any_unscored}


def _by_session(turns: pd.DataFrame) -> dict[str, list[Row]]:
    """A run's rows as plain dicts, per session and in turn order (per-row pandas access is far too slow for
    thousands of cells)."""
    out: dict[str, list[Row]] = {}
    for row in turns.sort_values(["turn"], kind="stable").to_dict("records"):
        out.setdefault(str(row["session_id"]), []).append(row)
    return out


def session_grids(runs: list[ReportRun], metrics: list[list[MetricInfo]], view: CellView,
                  max_sessions: int | None) -> tuple[list[dict[str, Any]], int]:
    """(grids of the shown sessions, number of sessions in all runs together)."""
    groups = [_by_session(r.turns) for r in runs]
    ids = sorted(set().union(*groups))
    shown = ids[:max_sessions] if max_sessions is not None else ids
    return [session_grid(sid, runs, groups, metrics, view) for sid in shown], len(ids)
