"""Aggregate tables over the per-turn table of a run (see docs/results.md).

Every function here is pure: it takes the per-turn DataFrame (one row per session and turn, the
columns of the run-directory contract) and returns a new DataFrame; nothing reads files. What a metric
means (its role, whether higher is better) comes in as ``specs``, a mapping column -> MetricSpec
(``Run.metric_specs()``); nothing here guesses it from a name.

Conventions the functions promise:

* A *metric column* is any column ``c`` that has a sibling ``c + "_status"``; new judges need no
  registration here.
* A cell is *scored* when its status is ``ok`` and its value is a finite number. Only scored cells
  enter a mean. A cell whose status is ``not_applicable`` is left out of the count entirely; every
  other cell (``unscored``, ``not_run``, an edit that failed) counts against *coverage*:
  ``coverage = scored / (rows - not_applicable)``. Coverage sits beside every mean.
* A mean is turn-weighted: the mean of all scored cells of the group.
* Confidence intervals are 95% percentile bootstraps that resample whole *sessions* (all turns of a
  session move together), seeded, so the same table comes out every time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from micebench.results.errors import ResultsError
from micebench.spec import MetricSpec

STATUS_SUFFIX = "_status"
DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0
DEFAULT_THRESHOLD = 0.5
REQUIRED_COLUMNS = ("session_id", "turn", "task_type", "status")
STAT_COLUMNS = ("mean", "ci_low", "ci_high", "scored", "total", "coverage", "sessions")
Specs = Mapping[str, MetricSpec]


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a per-turn table, in table order (``c`` such that ``c_status`` exists)."""
    cols = set(df.columns)
    return [c for c in df.columns if not c.endswith(STATUS_SUFFIX) and f"{c}{STATUS_SUFFIX}" in cols]


def higher_is_better(metric: str, specs: Specs | None) -> bool:
    """Whether a larger value of ``metric`` is better, as its spec says (a metric without a spec: yes)."""
    spec = (specs or {}).get(metric)
    return True if spec is None else spec.higher_is_better


def role(metric: str, specs: Specs | None) -> str:
    """The metric's role (if, cc, ga, other) as its spec says; ``other`` without a spec."""
    spec = (specs or {}).get(metric)
    return "other" if spec is None else spec.role


def check_turn_table(df: pd.DataFrame, where: str = "per-turn table") -> None:
    """Raise ResultsError naming ``where`` if a required column is missing or a turn index is not a positive int."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"{where}: missing column(s) {', '.join(missing)}")
    turns = pd.to_numeric(df["turn"], errors="coerce")
    if turns.isna().any() or (turns < 1).any() or (turns != turns.round()).any():
        bad = df.loc[turns.isna() | (turns < 1), "turn"].head(3).tolist()
        raise ResultsError(f"{where}: column 'turn' must hold 1-based integers, found {bad}")
    dup = df.duplicated(["session_id", "turn"])
    if dup.any():
        row = df.loc[dup].iloc[0]
        raise ResultsError(f"{where}: session {row['session_id']!r} turn {row['turn']} appears twice")


def _cells(df: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(scored mask, applicable mask) of one metric column."""
    status = df[f"{metric}{STATUS_SUFFIX}"].astype(str).to_numpy()
    values = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float)
    scored = (status == "ok") & np.isfinite(values)
    applicable = status != "not_applicable"
    return scored, applicable


def _session_codes(df: pd.DataFrame) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(df["session_id"].astype(str), sort=True)
    return codes, len(uniques)


def bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED
) -> tuple[float, float]:
    """95% percentile CI of ``sum(num) / sum(den)`` when the units (sessions) are resampled with replacement.

    ``num[i]`` and ``den[i]`` belong to unit i. Replicates whose denominator is 0 are dropped. Returns
    (nan, nan) for fewer than 2 units with a positive denominator.
    """
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    if (den > 0).sum() < 2 or n_boot < 1:
        return float("nan"), float("nan")
    weights = resample_weights(len(num), n_boot, seed)
    tot = weights @ den
    keep = tot > 0
    stats = (weights @ num)[keep] / tot[keep]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


@functools.lru_cache(maxsize=16)
def resample_weights(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """An (n_boot, n_units) matrix: how often each unit is drawn in each bootstrap replicate (seeded).

    Cached (read-only), since every group and metric of a table with the same size reuses it.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_units, size=(n_boot, n_units)) + (np.arange(n_boot) * n_units)[:, None]
    weights = np.bincount(idx.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units).astype(float)
    weights.flags.writeable = False
    return weights


def paired_delta(
    run_sums: np.ndarray, run_counts: np.ndarray, base_sums: np.ndarray, base_counts: np.ndarray,
    *, n_boot: int, seed: int,
) -> tuple[float, float, float]:
    """(delta, ci_low, ci_high) of ratio-of-sums means, sessions resampled jointly (paired bootstrap)."""
    delta = run_sums.sum() / run_counts.sum() - base_sums.sum() / base_counts.sum()
    if len(run_sums) < 2 or n_boot < 1:
        return float(delta), float("nan"), float("nan")
    w = resample_weights(len(run_sums), n_boot, seed)
    rn, bn = w @ run_counts, w @ base_counts
    keep = (rn > 0) & (bn > 0)
    if not keep.any():
        return float(delta), float("nan"), float("nan")
    boots = (w @ run_sums)[keep] / rn[keep] - (w @ base_sums)[keep] / bn[keep]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(delta), float(lo), float(hi)


def _stats(df: pd.DataFrame, metric: str, n_boot: int, seed: int) -> dict[str, Any]:
    scored, applicable = _cells(df, metric)
    values = np.where(scored, pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float), 0.0)
    n_scored, n_total = int(scored.sum()), int(applicable.sum())
    codes, n_sessions = _session_codes(df)
    sums = np.bincount(codes, weights=values, minlength=n_sessions)
    counts = np.bincount(codes, weights=scored.astype(float), minlength=n_sessions)
    mean = float(values.sum() / n_scored) if n_scored else float("nan")
    lo, hi = bootstrap_ratio(sums, counts, n_boot=n_boot, seed=seed)
    return {
        "mean": mean,
        "ci_low": lo,
        "ci_high": hi,
        "scored": n_scored,
        "total": n_total,
        "coverage": n_scored / n_total if n_total else float("nan"),
        "sessions": int((counts > 0).sum()),
    }


def aggregate(
    df: pd.DataFrame,
    by: list[str] | tuple[str, ...] = (),
    metrics: list[str] | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Long table: one row per (group, metric) with mean, 95% CI, scored, total, coverage, sessions.

    ``by`` names grouping columns (e.g. ``["turn"]``, ``["task_type"]``, ``["subset"]``); empty means
    the whole table. Groups are sorted; metrics keep table order.
    """
    metrics = metric_columns(df) if metrics is None else list(metrics)
    for m in metrics:
        if m not in df.columns or f"{m}{STATUS_SUFFIX}" not in df.columns:
            raise ResultsError(f"metric {m!r} not in the per-turn table (known: {', '.join(metric_columns(df))})")
    by = list(by)
    rows = []
    groups = [((), df)] if not by else df.groupby(by, sort=True, dropna=False)
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            rows.append({**dict(zip(by, key, strict=True)), "metric": m, **_stats(part, m, n_boot, seed)})
    return pd.DataFrame(rows, columns=[*by, "metric", *STAT_COLUMNS])


def overall(df: pd.DataFrame, metrics: list[str] | None = None, **kw: Any) -> pd.DataFrame:
    """One row per metric over every turn of the table."""
    return aggregate(df, (), metrics, **kw)


def by_turn(df: pd.DataFrame, metrics: list[str] | None = None, **kw: Any) -> pd.DataFrame:
    """One row per (turn index, metric): the multi-turn degradation curve."""
    return aggregate(df, ["turn"], metrics, **kw)


def by_task_type(df: pd.DataFrame, metrics: list[str] | None = None, **kw: Any) -> pd.DataFrame:
    """One row per (task type, metric)."""
    return aggregate(df, ["task_type"], metrics, **kw)


def by_subset(df: pd.DataFrame, metrics: list[str] | None = None, **kw: Any) -> pd.DataFrame:
    """One row per (subset, metric); a table without a subset column counts as one subset ''."""
    if "subset" not in df.columns:
        df = df.assign(subset="")
    return aggregate(df, ["subset"], metrics, **kw)


def default_success_metrics(df: pd.DataFrame, specs: Specs | None) -> list[str]:
    """The metrics cumulative success uses when none are named: every metric whose role is ``if``."""
    return [m for m in metric_columns(df) if role(m, specs) == "if"]


def cumulative_success(
    df: pd.DataFrame,
    metrics: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    specs: Specs | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Share of sessions that pass every turn up to t, for each metric and turn index t.

    ``metrics`` defaults to the metrics whose spec gives them role ``if``.

    A turn passes when its score is ``>= threshold`` (``<=`` for lower-is-better metrics). A session's
    outcome at t is *fail* as soon as a scored turn <= t failed, *pass* when every turn <= t passed or
    was not applicable, and *unknown* otherwise (a turn <= t unscored, not run or not edited). The rate
    is passes / (passes + fails); ``coverage`` is the known share of the sessions that reach turn t.
    """
    metrics = default_success_metrics(df, specs) if metrics is None else list(metrics)
    rows = []
    df = df.sort_values(["session_id", "turn"], kind="stable")
    max_turn = int(df["turn"].max()) if len(df) else 0
    for m in metrics:
        if f"{m}{STATUS_SUFFIX}" not in df.columns:
            raise ResultsError(f"metric {m!r} not in the per-turn table")
        scored, applicable = _cells(df, m)
        values = pd.to_numeric(df[m], errors="coerce").to_numpy(dtype=float)
        good = values >= threshold if higher_is_better(m, specs) else values <= threshold
        # per turn: 1 pass, 0 fail, -1 unknown (not applicable counts as pass)
        state = np.where(~applicable, 1, np.where(scored, good.astype(int), -1))
        frame = pd.DataFrame({"session_id": df["session_id"].astype(str).to_numpy(), "turn": df["turn"], "s": state})
        per = {sid: dict(zip(g["turn"].astype(int), g["s"], strict=True)) for sid, g in frame.groupby("session_id")}
        sessions = sorted(per)
        outcome = {sid: 1 for sid in sessions}  # running outcome through turn t
        for t in range(1, max_turn + 1):
            reached, num, den = [], [], []
            for sid in sessions:
                if t not in per[sid]:
                    continue
                s = per[sid][t]
                cur = outcome[sid]
                outcome[sid] = 0 if (cur == 0 or s == 0) else (-1 if (cur == -1 or s == -1) else 1)
                reached.append(sid)
                num.append(1.0 if outcome[sid] == 1 else 0.0)
                den.append(0.0 if outcome[sid] == -1 else 1.0)
            if not reached:
                continue
            num_a, den_a = np.array(num), np.array(den)
            known = int(den_a.sum())
            lo, hi = bootstrap_ratio(num_a, den_a, n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "metric": m,
                    "turn": t,
                    "threshold": threshold,
                    "success": float(num_a.sum() / known) if known else float("nan"),
                    "ci_low": lo,
                    "ci_high": hi,
                    "known": known,
                    "sessions": len(reached),
                    "coverage": known / len(reached),
                }
            )
    cols = ["metric", "turn", "threshold", "success", "ci_low", "ci_high", "known", "sessions", "coverage"]
    return pd.DataFrame(rows, columns=cols)


def session_means(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per session: the mean of its scored turns and the scored-turn count, per metric.

    Columns: ``session_id``, ``subset`` (when the table has one), then ``<metric>`` and ``<metric>_n``
    for each metric. ``mean * n`` summed over sessions and divided by the summed ``n`` gives back the
    turn-weighted mean of :func:`overall`, which is what the gate's paired bootstrap relies on.
    """
    metrics = metric_columns(df) if metrics is None else list(metrics)
    keys = ["session_id", "subset"] if "subset" in df.columns else ["session_id"]
    out = df[keys].drop_duplicates("session_id").astype(str).sort_values("session_id").reset_index(drop=True)
    sid = df["session_id"].astype(str)
    for m in metrics:
        scored, _ = _cells(df, m)
        vals = pd.to_numeric(df[m], errors="coerce").where(scored)
        grp = vals.groupby(sid)
        out[m] = out["session_id"].map(grp.mean()).astype(float)
        out[f"{m}_n"] = out["session_id"].map(grp.count()).fillna(0).astype(int)
    return out


def wide(long: pd.DataFrame, index: str, digits: int = 3, rows: str = "metric") -> pd.DataFrame:
    """Printable pivot of an :func:`aggregate` table: ``mean [lo, hi] cov X%`` cells with one row per metric and one
    column per group (``rows="metric"``, readable when a run has many metrics), or the other way round
    (``rows="group"``, readable when there are many groups)."""

    def cell(r: pd.Series) -> str:
        if not np.isfinite(r["mean"]):
            return f"- (cov {r['coverage']:.0%})" if np.isfinite(r["coverage"]) else "-"
        ci = "" if not np.isfinite(r["ci_low"]) else f" [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
        return f"{r['mean']:.{digits}f}{ci} cov {r['coverage']:.0%}"

    long = long.assign(cell=long.apply(cell, axis=1))
    order = list(dict.fromkeys(long["metric"]))
    if rows == "group":
        return long.pivot(index=index, columns="metric", values="cell")[order]
    return long.pivot(index="metric", columns=index, values="cell").loc[order]
