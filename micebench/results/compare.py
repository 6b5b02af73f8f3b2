"""Paired comparison of two runs, session by session, without publishing a baseline first.

For each metric both runs have, overall and at each turn index, the sessions of A and B are paired by
session id and ``delta = mean(B) - mean(A)`` (turn-weighted means over the paired sessions' scored
turns) gets a 95% paired bootstrap CI: each replicate draws one set of sessions and applies it to both
runs, so what the two runs share (the sessions' difficulty) cancels out. ``verdict`` says ``B better``
or ``B worse`` when the CI excludes 0 (direction from the metric's spec), else ``no clear difference``.
``wins`` / ``losses`` count paired sessions whose mean is better / worse in B.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from micebench.results import aggregate
from micebench.results.run import ResultsError, Run, open_run
from micebench.results.summary import comparability_notes, to_markdown

DEFAULT_BOOTSTRAP = 2000
_EPS = 1e-12


@dataclass
class Comparison:
    """One (metric, turn) of a comparison; ``turn`` is 'all' or a turn index."""

    metric: str
    turn: str
    a: float
    b: float
    delta: float
    ci_low: float
    ci_high: float
    pairs: int
    wins: int
    losses: int
    higher_is_better: bool
    verdict: str


@dataclass
class CompareResult:
    run_a: str
    run_b: str
    label_a: str
    label_b: str
    rows: list[Comparison]
    notes: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows])

    def to_json(self) -> str:
        def clean(v):
            return v if not isinstance(v, float) or math.isfinite(v) else None

        payload = {k: v for k, v in asdict(self).items() if k != "rows"}
        payload["rows"] = [{k: clean(v) for k, v in asdict(r).items()} for r in self.rows]
        return json.dumps(payload, indent=2, allow_nan=False)


def _verdict(delta: float, lo: float, hi: float, higher_is_better: bool) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no CI" if math.isfinite(delta) else "no data"
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((sign * lo, sign * hi))
    if lo > _EPS:
        return "B better"
    if hi < -_EPS:
        return "B worse"
    return "no clear difference"


def _cells(df: pd.DataFrame, metric: str, sessions: dict[str, int], turns: dict[int, int]) -> tuple:
    """(sums, counts): (session x turn) arrays of a metric's scored values, sessions and turns indexed as
    given (rows of other sessions are dropped)."""
    sid = df["session_id"].astype(str).map(sessions)
    keep = sid.notna().to_numpy()
    status = df[f"{metric}{aggregate.STATUS_SUFFIX}"].astype(str).to_numpy()
    values = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float)
    scored = keep & (status == "ok") & np.isfinite(values)
    rows = sid.to_numpy()[scored].astype(int)
    cols = df["turn"].map(turns).to_numpy()[scored].astype(int)
    sums = np.zeros((len(sessions), len(turns)))
    counts = np.zeros((len(sessions), len(turns)))
    np.add.at(sums, (rows, cols), values[scored])
    np.add.at(counts, (rows, cols), 1.0)
    return sums, counts


def _one(metric: str, turn: str, a: tuple, b: tuple, hib: bool, n_boot: int, seed: int) -> Comparison:
    """One comparison from per-session (sums, counts) of A and B; a session counts only where both scored."""
    (sa, na), (sb, nb) = a, b
    both = (na > 0) & (nb > 0)
    if not both.any():
        nan = float("nan")
        return Comparison(metric, turn, nan, nan, nan, nan, nan, 0, 0, 0, hib, "no data")
    sa, na, sb, nb = (np.where(both, x, 0.0) for x in (sa, na, sb, nb))
    # every shared session stays a unit (zero weight where unpaired), so the resample matrix is shared too
    delta, lo, hi = aggregate.paired_delta(sb, nb, sa, na, n_boot=n_boot, seed=seed)
    ma = np.divide(sa, na, out=np.zeros_like(sa), where=both)
    mb = np.divide(sb, nb, out=np.zeros_like(sb), where=both)
    better = both & ((mb > ma) if hib else (mb < ma))
    worse = both & ((mb < ma) if hib else (mb > ma))
    return Comparison(
        metric=metric, turn=turn, a=float(sa.sum() / na.sum()), b=float(sb.sum() / nb.sum()),
        delta=delta, ci_low=lo, ci_high=hi, pairs=int(both.sum()), wins=int(better.sum()), losses=int(worse.sum()),
        higher_is_better=hib, verdict=_verdict(delta, lo, hi, hib),
    )  # fmt: skip


def compare_runs(
    run_a: Run | str,
    run_b: Run | str,
    *,
    metrics: list[str] | None = None,
    per_turn: bool = True,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> CompareResult:
    """Compare B against A on the metrics both have (or ``metrics``); sessions paired by id.

    Only sessions with a scored turn in both runs enter a (metric, turn) comparison. ResultsError when
    the runs share no session or no metric.
    """
    a, b = open_run(run_a), open_run(run_b)
    sa, sb = a.metric_specs(), b.metric_specs()
    common = [m for m in sa if m in sb]
    if metrics:
        missing = [m for m in metrics if m not in common]
        if missing:
            shared = ", ".join(common) or "none"
            raise ResultsError(f"metric(s) {', '.join(missing)} not in both runs (shared: {shared})")
        common = list(metrics)
    if not common:
        raise ResultsError(f"{a.root} and {b.root} share no metric")
    ta, tb = a.turns(), b.turns()
    shared = set(ta["session_id"].astype(str)) & set(tb["session_id"].astype(str))
    if not shared:
        raise ResultsError(f"{a.root} and {b.root} share no session id: nothing to pair")
    result = CompareResult(str(a.root), str(b.root), a.label, b.label, [], comparability_notes([a, b]))
    for m in common:
        if sa[m].higher_is_better != sb[m].higher_is_better or sa[m].role != sb[m].role:
            result.notes.append(f"{m}: the runs' judges declare it differently; A's spec is used")
    n_a, n_b = ta["session_id"].nunique(), tb["session_id"].nunique()
    if len(shared) < max(n_a, n_b):
        result.notes.append(f"paired {len(shared)} sessions (A has {n_a}, B has {n_b})")
    sessions = {sid: i for i, sid in enumerate(sorted(shared))}
    all_turns = sorted(set(ta["turn"]) | set(tb["turn"]))
    turn_index = {t: i for i, t in enumerate(all_turns)}
    shown = sorted(set(ta["turn"]) & set(tb["turn"])) if per_turn else []
    for m in common:
        hib = sa[m].higher_is_better
        ca, cb = _cells(ta, m, sessions, turn_index), _cells(tb, m, sessions, turn_index)
        overall = tuple(tuple(x.sum(axis=1) for x in c) for c in (ca, cb))
        result.rows.append(_one(m, "all", overall[0], overall[1], hib, n_boot, seed))
        for t in shown:
            k = turn_index[t]
            result.rows.append(_one(m, str(t), (ca[0][:, k], ca[1][:, k]), (cb[0][:, k], cb[1][:, k]), hib,
                                    n_boot, seed))
    return result


def format_compare(result: CompareResult, fmt: str = "text", digits: int = 3) -> str:
    """The comparison as a text or Markdown table (``json``: :meth:`CompareResult.to_json`)."""
    if fmt == "json":
        return result.to_json()

    def num(v: float, signed: bool = False) -> str:
        return "-" if not math.isfinite(v) else (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}")

    rows = []
    for r in result.rows:
        ci = "-" if not math.isfinite(r.ci_low) else f"[{num(r.ci_low, True)}, {num(r.ci_high, True)}]"
        rows.append({
            "metric": r.metric + ("" if r.higher_is_better else " (lower=better)"), "turn": r.turn,
            "A": num(r.a), "B": num(r.b), "B - A": num(r.delta, True), "95% CI": ci, "pairs": str(r.pairs),
            "B wins/losses": f"{r.wins}/{r.losses}", "verdict": r.verdict,
        })  # fmt: skip
    table = pd.DataFrame(rows).set_index("metric") if rows else pd.DataFrame()
    head = [f"A: {result.label_a} ({result.run_a})", f"B: {result.label_b} ({result.run_b})"]
    notes = [f"note: {n}" for n in result.notes]
    if fmt == "markdown":
        return "\n".join([f"**A** {result.label_a} vs **B** {result.label_b}", "", to_markdown(table), "",
                          "<sub>B - A on paired sessions; 95% paired bootstrap CI (sessions resampled).</sub>",
                          *[f"> **{n}**" for n in notes]])
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        return "\n".join([*head, table.to_string(), *notes])
