"""Summaries of one or more runs: one long table, rendered as text, Markdown, LaTeX or JSON.

:func:`summarize` is the one aggregation path behind the table printed after ``micebench run``,
``micebench summary`` and ``Run.summary()``: per run, per metric, per turn index and over all turns,
the turn-weighted mean with a 95% session-bootstrap CI and coverage (see :mod:`.aggregate`).
Which metrics are IF, CC or GA, and which direction is better, comes from the runs' metric specs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from micebench.results import aggregate
from micebench.results.run import ResultsError, Run, open_run

MAIN_ROLES = ("if", "cc", "ga")
ROLE_ORDER = {"if": 0, "cc": 1, "ga": 2, "other": 3}
FORMATS = ("text", "markdown", "latex", "json")
SUMMARY_COLUMNS = ("run_id", "editor", "label", "metric", "role", "higher_is_better", "turn", *aggregate.STAT_COLUMNS)


def _metrics_of(run: Run, metrics: Sequence[str] | None, roles: Sequence[str] | None) -> list[str]:
    specs = run.metric_specs()
    if metrics:
        return [m for m in metrics if m in specs]
    chosen = [m for m, s in specs.items() if roles is None or s.role in roles]
    return sorted(chosen, key=lambda m: (ROLE_ORDER.get(specs[m].role, 9), list(specs).index(m)))


def summarize(
    runs: Sequence[Run | str],
    *,
    metrics: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    per_turn: bool = True,
    n_boot: int = aggregate.DEFAULT_BOOTSTRAP,
    seed: int = aggregate.DEFAULT_SEED,
) -> pd.DataFrame:
    """Long table: one row per (run, metric, turn) with ``turn`` = 1, 2, ... and ``"all"``.

    ``metrics`` picks columns by name (a name a run lacks is skipped for that run, an unknown name in
    every run is an error); else ``roles`` picks by role (e.g. ``("if", "cc", "ga")``); else every metric.
    Metrics are ordered IF, CC, GA, other.
    """
    runs = [open_run(r) for r in runs]
    if metrics:
        known = {m for r in runs for m in r.metric_specs()}
        unknown = [m for m in metrics if m not in known]
        if unknown:
            have = ", ".join(sorted(known))
            raise ResultsError(f"metric(s) {', '.join(unknown)} in none of the runs (known: {have})")
    frames = []
    for run in runs:
        chosen = _metrics_of(run, metrics, roles)
        if not chosen:
            continue
        specs = run.metric_specs()
        df = run.turns()
        parts = [aggregate.overall(df, chosen, n_boot=n_boot, seed=seed).assign(turn="all")]
        if per_turn:
            parts.insert(0, aggregate.by_turn(df, chosen, n_boot=n_boot, seed=seed))
        long = pd.concat(parts, ignore_index=True)
        long["turn"] = long["turn"].astype(object)
        long = long.assign(
            run_id=run.run_id, editor=run.editor, label=run.label,
            role=[specs[m].role for m in long["metric"]],
            higher_is_better=[specs[m].higher_is_better for m in long["metric"]],
        )  # fmt: skip
        order = {m: i for i, m in enumerate(chosen)}
        long = long.sort_values(["metric", "turn"], key=lambda c: c.map(order) if c.name == "metric" else
                                c.map(lambda t: math.inf if t == "all" else t), kind="stable")
        frames.append(long[list(SUMMARY_COLUMNS)])
    if not frames:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """run_id -> row label: the editor's name, with the run id only where two runs share an editor."""
    editors = [r.editor for r in runs]
    return {r.run_id: (r.editor if editors.count(r.editor) == 1 else f"{r.editor} ({r.run_id})") for r in runs}


def comparability_notes(runs: Sequence[Run]) -> list[str]:
    """Warnings when runs put side by side differ in suite, suite version or judges."""
    notes = []
    for what, get in (
        ("suite", lambda r: f"{r.manifest.suite.name}@{r.manifest.suite.version}"),
        ("judges", lambda r: r.manifest.judges_label),
    ):
        values = {get(r) for r in runs}
        if len(values) > 1:
            notes.append(f"the runs differ in {what} ({'; '.join(sorted(values))}): their numbers are not comparable")
    return notes


def _cell(r: Any, digits: int, ci: bool) -> str:
    if not math.isfinite(r.mean):
        return "-"
    text = f"{r.mean:.{digits}f}"
    if ci and math.isfinite(r.ci_low):
        text += f" [{r.ci_low:.{digits}f}, {r.ci_high:.{digits}f}]"
    if math.isfinite(r.coverage) and r.coverage < 1:
        text += f" cov {r.coverage:.0%}"
    return text


def grid(long: pd.DataFrame, labels: dict[str, str], *, digits: int = 3, ci: bool = True) -> pd.DataFrame:
    """The printable table: one row per run, one column per (metric, turn) with ``mean [lo, hi]`` cells
    (and ``cov X%`` where coverage is below 100%)."""
    if long.empty:
        return pd.DataFrame()
    cols = list(dict.fromkeys(
        (m, t) for m, t in zip(long["metric"], long["turn"], strict=True)
    ))  # fmt: skip
    metric_order = list(dict.fromkeys(long["metric"]))
    cols.sort(key=lambda c: (metric_order.index(c[0]), math.inf if c[1] == "all" else c[1]))
    rows: dict[str, dict[str, str]] = {}
    for r in long.itertuples():
        name = f"{r.metric} {'all' if r.turn == 'all' else f't{r.turn}'}"
        rows.setdefault(labels.get(r.run_id, r.label), {})[name] = _cell(r, digits, ci)
    headers = [f"{m} {'all' if t == 'all' else f't{t}'}" for m, t in cols]
    out = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=headers).fillna("-")
    out.index.name = "editor"
    return out


def _arrow(long: pd.DataFrame) -> dict[str, str]:
    return {m: ("" if hib else " (lower is better)")
            for m, hib in zip(long["metric"], long["higher_is_better"], strict=True)}


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

    def esc(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = [table.index.name or "", *table.columns]
    rule = "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"
    lines = ["| " + " | ".join(esc(h) for h in head) + " |", rule]
    lines += ["| " + " | ".join(esc(v) for v in [idx, *row]) + " |" for idx, row in zip(table.index, table.values,
                                                                                         strict=True)]
    return "\n".join(lines)


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """A booktabs ``tabular`` (no package beyond booktabs), every cell escaped."""
    spec = "l" + "r" * len(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in [table.index.name or "", *table.columns]) + r" \\")
    lines.append(r"\midrule")
    for idx, row in zip(table.index, table.values, strict=True):
        lines.append(" & ".join(latex_escape(v) for v in [idx, *row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return value


def render(runs: Sequence[Run], long: pd.DataFrame, fmt: str, *, digits: int = 3) -> str:
    """The summary of ``runs`` (``long`` from :func:`summarize`) in one of FORMATS."""
    if fmt not in FORMATS:
        raise ResultsError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    labels = run_labels(runs)
    notes = comparability_notes(runs)
    if fmt == "json":
        specs: dict[str, Any] = {}
        for r in runs:
            specs.update({k: v.model_dump(mode="json") for k, v in r.metric_specs().items()})
        payload = {
            "runs": [{"run_id": r.run_id, "editor": r.editor, "label": labels[r.run_id], "path": str(r.root),
                      "suite": r.manifest.suite.name, "suite_version": r.manifest.suite.version,
                      "judges": r.manifest.judges_label, "status": r.status_counts()} for r in runs],
            "metrics": specs,
            "notes": notes,
            "rows": [{k: _json_safe(v) for k, v in rec.items()} for rec in long.to_dict("records")],
        }
        return json.dumps(payload, indent=2, allow_nan=False)
    table = grid(long, labels, digits=digits)
    arrows = {m: a for m, a in _arrow(long).items() if a} if not long.empty else {}
    suites = sorted({f"{r.manifest.suite.name}@{r.manifest.suite.version}" for r in runs})
    legend = (f"Suite {', '.join(suites)}; mean [95% CI, sessions resampled] over scored turns, "
              "cov = scored / applicable turns where below 100%.")
    if arrows:
        legend += " Lower is better for " + ", ".join(sorted(arrows)) + "."
    if table.empty:
        body = "(no metric columns: the runs have not been judged)"
    elif fmt == "markdown":
        body = to_markdown(table)
    elif fmt == "latex":
        return to_latex(table, caption=legend) + "".join(f"\n% note: {n}" for n in notes)
    else:
        with pd.option_context("display.width", 250, "display.max_columns", 200, "display.max_colwidth", 40):
            body = table.to_string()
    lines = [body, "", legend] + [f"note: {n}" for n in notes]
    if fmt == "markdown":
        lines = [body, "", f"<sub>{legend}</sub>"] + [f"> **note:** {n}" for n in notes]
    return "\n".join(lines)
