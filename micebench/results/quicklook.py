"""What the console shows after ``micebench run`` / ``score``: what went wrong, then the scores.

The scores come from :func:`micebench.results.summary.summarize`, the same aggregation as
``micebench summary``: coverage counts failed and unscored turns, and every metric is shown, IF / CC / GA
first. Above them: how many turns ended ``error`` / ``skipped`` / ``pending`` and how many judgements
``unscored``, with the most common reasons and their counts, since the good messages otherwise live only
in the table's ``error`` and ``*_reason`` columns.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from micebench.results.run import Run, open_run
from micebench.results.summary import MAIN_ROLES, run_labels, summarize

TOP_REASONS = 3
REASON_WIDTH = 400  # long enough for an install or download hint at the end of a message


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."


def top_reasons(reasons: Sequence[str], n: int = TOP_REASONS) -> list[tuple[str, int]]:
    """The ``n`` most common reasons (whitespace folded, long ones cut) with their counts."""
    return Counter(_short(r) for r in reasons if isinstance(r, str) and r).most_common(n)


def problems(run: Run) -> list[str]:
    """Lines on what went wrong: failed turns and unscored judgements, each with its commonest reasons."""
    df = run.turns()
    lines = []
    for status in ("error", "skipped", "pending"):
        rows = df[df["status"] == status]
        if rows.empty:
            continue
        lines.append(f"{status}: {len(rows)} turn(s)" + ("" if status != "pending" else " (run not finished)"))
        if status == "skipped":  # their reason is the failure that skipped them, counted above as an error
            continue
        lines += [f"  {n} x {why}" for why, n in top_reasons(rows["error"].tolist())]
    unscored: dict[str, list[str]] = {}
    for m in run.metric_specs():
        cells = df[df[f"{m}_status"] == "unscored"]
        if len(cells):
            unscored[m] = cells[f"{m}_reason"].tolist() if f"{m}_reason" in df.columns else []
    if unscored:
        total = sum(len(v) for v in unscored.values())
        per = ", ".join(f"{m} {len(v)}" for m, v in unscored.items())
        lines.append(f"unscored: {total} judgement(s) ({per})")
        lines += [f"  {n} x {why}" for why, n in top_reasons([r for v in unscored.values() for r in v])]
    return lines


def _fmt(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"


def turn_summary(run_dir: str | Path | Run, *, n_boot: int = 200) -> str:
    """The post-run screen of one run: header, problems, then each metric per turn with coverage."""
    run = open_run(run_dir)
    m = run.manifest
    status = run.status_counts()
    head = (f"{run.editor} on {m.suite.name} ({m.suite.n_sessions or run.turns()['session_id'].nunique()} sessions): "
            + ", ".join(f"{k} {v}" for k, v in status.items()) + f"  -> {run.root}")
    lines = [head, *problems(run)]
    long = summarize([run], n_boot=n_boot)
    if long.empty:
        return "\n".join([*lines, "(no judge scores)"])
    if not long["scored"].any():
        return "\n".join([*lines, f"nothing scored: no metric has a scored turn ({len(long['metric'].unique())} "
                                   "metrics; the reasons are above)"])
    rows = {}
    for metric, part in long.groupby("metric", sort=False):
        row = {("turn " + str(t) if t != "all" else "all"): _fmt(v) for t, v in zip(part["turn"], part["mean"],
                                                                                     strict=True)}
        overall = part[part["turn"] == "all"].iloc[0]
        ci = "" if not math.isfinite(overall.ci_low) else f"[{overall.ci_low:.3f}, {overall.ci_high:.3f}]"
        row["95% CI"] = ci or "-"
        row["coverage"] = _fmt(overall.coverage)
        label = metric + ("" if overall.higher_is_better else " (lower=better)")
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index").fillna("-")
    lines.append(table.to_string())
    return "\n".join(lines)


def editors_table(run_dirs: Sequence[str | Path | Run], *, n_boot: int = 0) -> str:
    """One line per run: the mean of each IF / CC / GA metric over all scored turns, and failed turns."""
    runs = [open_run(d) for d in run_dirs]
    long = summarize(runs, roles=MAIN_ROLES, per_turn=False, n_boot=n_boot)
    rows: dict[str, dict[str, str]] = {}
    labels = run_labels(runs)
    for run in runs:
        part = long[long["run_id"] == run.run_id]
        row = {r.metric: _fmt(r.mean) + (f" cov {r.coverage:.0%}" if r.coverage < 1 else "") for r in part.itertuples()}
        status = run.status_counts()
        row["failed turns"] = str(sum(v for k, v in status.items() if k != "ok"))
        rows[labels[run.run_id]] = row
    return pd.DataFrame.from_dict(rows, orient="index").fillna("-").to_string()
