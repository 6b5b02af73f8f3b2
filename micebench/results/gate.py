"""The CI gate: compare a run with its baseline row of a leaderboard, fail on a significant drop.

For each subset row of the run and each metric, the gate pairs the run's sessions with the baseline's
(by session id, from the leaderboard's per-session sidecar), and computes

* ``delta`` = run mean - baseline mean on the paired sessions (turn-weighted means), and
* a 95% paired bootstrap CI of ``delta``: sessions are resampled once per replicate, and the same
  draw is applied to both runs.

A metric *regresses* when it got worse by more than its tolerance AND the CI excludes 0 on the worse
side. For a lower-is-better metric (as the judge's MetricSpec, recorded in the run's manifest, says)
"worse" means larger. A metric whose coverage (scored / applicable turns) fell by more than
``max_coverage_drop`` fails too. A subset row with fewer than ``min_pairs`` paired sessions is not
judged at all: its checks are ``insufficient`` (one session says nothing about a regression).

Exit codes: 0 pass, 1 regression (or coverage drop), 2 usage error or incomparable baseline (other
suite version, judges or judge protocol, or a run scored with random weights; raised as ResultsError),
3 insufficient (no regression, but some row had too few paired sessions to judge).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micebench.results import aggregate as tables
from micebench.results import leaderboard
from micebench.results.aggregate import paired_delta
from micebench.results.run import ResultsError, Run

PASS, REGRESSION, INCOMPARABLE, INSUFFICIENT = 0, 1, 2, 3
FAILING = ("regression", "coverage drop")
DEFAULT_MIN_PAIRS = 10
_EPS = 1e-9


@dataclass
class MetricCheck:
    """The verdict on one (subset, metric)."""

    subset: str
    metric: str
    baseline: float
    run: float
    delta: float
    ci_low: float
    ci_high: float
    tolerance: float
    paired_sessions: int
    run_coverage: float
    baseline_coverage: float
    higher_is_better: bool
    verdict: str  # "regression" | "coverage drop" | "improvement" | "ok" | "no data" | "insufficient"


@dataclass
class GateResult:
    """All checks of one gate call, the baseline rows used and notes worth reading."""

    run: str
    baseline_file: str
    checks: list[MetricCheck]
    baseline_rows: list[str]
    notes: list[str] = field(default_factory=list)
    min_pairs: int = DEFAULT_MIN_PAIRS

    @property
    def verdict(self) -> str:
        """``regression`` (a check failed), else ``insufficient`` (a row had too few pairs), else ``pass``."""
        if any(c.verdict in FAILING for c in self.checks):
            return "regression"
        if any(c.verdict == "insufficient" for c in self.checks):
            return "insufficient"
        return "pass"

    @property
    def exit_code(self) -> int:
        return {"regression": REGRESSION, "insufficient": INSUFFICIENT, "pass": PASS}[self.verdict]

    def to_json(self) -> str:
        """Strict JSON (a missing number is null, never NaN)."""
        payload = asdict(self) | {"verdict": self.verdict, "exit_code": self.exit_code,
                                  "passed": self.exit_code == PASS}
        return json.dumps(_no_nan(payload), indent=2, allow_nan=False)


def _no_nan(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def parse_tolerances(values: tuple[str, ...] | list[str], default: float = 0.02) -> tuple[float, dict[str, float]]:
    """``["0.03", "pixel_psnr_src=0.5"]`` -> (0.03, {"pixel_psnr_src": 0.5}); ResultsError on a bad value."""
    per: dict[str, float] = {}
    for v in values:
        name, _, num = v.rpartition("=")
        try:
            x = float(num)
        except ValueError:
            raise ResultsError(f"--tolerance {v!r}: expected a number or METRIC=NUMBER") from None
        if x < 0:
            raise ResultsError(f"--tolerance {v!r}: must not be negative")
        if name:
            per[name] = x
        else:
            default = x
    return default, per


def select_baseline(board: pd.DataFrame, row: dict[str, Any], editor: str, config_hash: str | None) -> tuple[dict, str]:
    """The baseline row matching a run row; (row, note). ResultsError when none is comparable or several are."""
    same = board[(board["suite"] == row["suite"]) & (board["subset"] == row["subset"]) & (board["editor"] == editor)]
    where = f"suite {row['suite']!r} subset {row['subset']!r} editor {editor!r}"
    if same.empty:
        have = sorted(set(zip(board["editor"], board["suite"], board["subset"], strict=True)))
        raise ResultsError(f"no baseline row for {where}; the baseline has (editor, suite, subset): {have}")
    for col, what in (("suite_version", "suite version"), ("judge_hash", "judges (profile or prompt)")):
        match = same[same[col] == str(row[col])]
        if match.empty:
            theirs = sorted(set(same[col]) if col != "judge_hash" else set(same["judges"] + " #" + same[col]))
            ours = row[col] if col != "judge_hash" else f"{row['judges']} #{row[col]}"
            raise ResultsError(f"incomparable baseline for {where}: {what} differs (run {ours}, baseline {theirs})")
        same = match
    note = ""
    if config_hash is not None:
        same = same[same["editor_config_hash"] == config_hash]
        if same.empty:
            raise ResultsError(f"no baseline row for {where} with editor config hash {config_hash!r}")
    elif same["editor_config_hash"].nunique() > 1:
        exact = same[same["editor_config_hash"] == str(row["editor_config_hash"])]
        if exact.empty:
            raise ResultsError(
                f"several baseline rows for {where} (config hashes {sorted(set(same['editor_config_hash']))}); "
                "pick one with --config-hash"
            )
        same = exact
    base_protocols = same.iloc[-1].get("judge_protocols", "") if "judge_protocols" in same.columns else ""
    clash = leaderboard.protocol_clash(row.get("judge_protocols", ""), base_protocols)
    if clash:
        raise ResultsError(f"incomparable baseline for {where}: judge protocol differs ({clash}, run vs baseline)")
    if len(same) > 1:
        same = same.sort_values("created", kind="stable")
        newest = same.iloc[-1]["row_id"]
        note = f"{where}: {len(same)} baseline rows (micebench versions differ); using the newest, {newest}"
    return same.iloc[-1].to_dict(), note


def _verdict(change: float, lo: float, hi: float, tol: float) -> str:
    """``change``/``lo``/``hi`` are oriented so that negative means worse; ``_EPS`` absorbs float round-off."""
    if change < -tol and hi < -_EPS:
        return "regression"
    if change > tol and lo > _EPS:
        return "improvement"
    return "ok"


def run_gate(
    run: Run,
    baseline_file: str | Path,
    *,
    editor: str | None = None,
    config_hash: str | None = None,
    metrics: list[str] | None = None,
    subsets: list[str] | None = None,
    tolerance: float = 0.02,
    tolerances: dict[str, float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    max_coverage_drop: float | None = 0.05,
    min_pairs: int = DEFAULT_MIN_PAIRS,
) -> GateResult:
    """Compare ``run`` with its baseline rows in ``baseline_file``; see the module docstring for the rule.

    ``max_coverage_drop``: a metric whose coverage fell by more than this (absolute, e.g. because the
    editor now fails turns, which are then not scored) fails as "coverage drop"; None disables it.
    ``min_pairs``: a subset row with fewer paired sessions gets ``insufficient`` checks.
    """
    if min_pairs < 1:
        raise ResultsError(f"--min-pairs must be at least 1, got {min_pairs}")
    leaderboard.check_publishable(run)
    baseline_file = Path(baseline_file)
    if not baseline_file.is_file():
        raise ResultsError(f"{baseline_file}: baseline leaderboard not found")
    board = leaderboard.read_board(baseline_file)
    missing = [c for c in leaderboard.KEY_COLUMNS if c not in board.columns]
    if missing:
        raise ResultsError(f"{baseline_file}: not a micebench leaderboard (missing {', '.join(missing)})")
    editor = editor or run.manifest.editor.name
    tolerances = tolerances or {}
    specs = run.metric_specs()
    rows = leaderboard.rows_for_run(run, n_boot=0)
    if subsets:
        unknown = sorted(set(subsets) - {r["subset"] for r, _ in rows})
        if unknown:
            raise ResultsError(f"subset(s) {unknown} not in the run (it has {[r['subset'] for r, _ in rows]})")
        rows = [(r, s) for r, s in rows if r["subset"] in subsets]
    result = GateResult(run=str(run.root), baseline_file=str(baseline_file), checks=[], baseline_rows=[],
                        min_pairs=min_pairs)
    for row, run_sessions in rows:
        base, note = select_baseline(board, row, editor, config_hash)
        if note:
            result.notes.append(note)
        result.baseline_rows.append(base["row_id"])
        base_sessions = leaderboard.read_sessions(baseline_file, base["row_id"])
        run_metrics = list(specs)
        base_metrics = [c[:-2] for c in base_sessions.columns if c.endswith("_n") and c[:-2] in base_sessions.columns]
        common = [m for m in run_metrics if m in base_metrics]
        if not metrics:
            only_run = sorted(set(run_metrics) - set(base_metrics))
            only_base = sorted(set(base_metrics) - set(run_metrics))
            if only_run:
                result.notes.append(f"subset {row['subset']}: not in the baseline, not gated: {', '.join(only_run)}")
            if only_base:
                result.notes.append(f"subset {row['subset']}: in the baseline only, not gated: {', '.join(only_base)}")
        if metrics:
            absent = [m for m in metrics if m not in common]
            if absent:
                raise ResultsError(
                    f"metric(s) {absent} not in both the run and the baseline row {base['row_id']} "
                    f"(common: {common})"
                )
            common = list(metrics)
        if not common:
            raise ResultsError(f"the run and baseline row {base['row_id']} share no metric")
        if base.get("suite_digest") and base["suite_digest"] != row["suite_digest"]:
            result.notes.append(f"subset {row['subset']}: suite digest differs from the baseline's; paired by id")
        merged = run_sessions.merge(base_sessions, on="session_id", suffixes=("", "_base"))
        if merged.empty:
            raise ResultsError(f"incomparable baseline row {base['row_id']}: no session id in common with the run")
        n_run, n_base = len(run_sessions), len(base_sessions)
        if len(merged) < max(n_run, n_base):
            result.notes.append(
                f"subset {row['subset']}: paired {len(merged)} sessions (run has {n_run}, baseline {n_base})"
            )
        insufficient = len(merged) < min_pairs
        if insufficient:
            result.notes.append(f"subset {row['subset']}: {len(merged)} paired sessions, fewer than --min-pairs "
                                f"{min_pairs}: not judged (insufficient)")
        for m in common:
            rn = merged[f"{m}_n"].to_numpy(float)
            bn = merged[f"{m}_n_base"].to_numpy(float)
            rs = np.nan_to_num(merged[m].to_numpy(float)) * rn
            bs = np.nan_to_num(merged[f"{m}_base"].to_numpy(float)) * bn
            hib = tables.higher_is_better(m, specs)
            tol = tolerances.get(m, tolerance)
            bcov = pd.to_numeric(base.get(f"{m}_cov", ""), errors="coerce")
            if rn.sum() == 0 or bn.sum() == 0:
                d = lo = hi = float("nan")
                verdict = "no data"
            elif insufficient:
                d, lo, hi = paired_delta(rs, rn, bs, bn, n_boot=n_boot, seed=seed)
                verdict = "insufficient"
            else:
                d, lo, hi = paired_delta(rs, rn, bs, bn, n_boot=n_boot, seed=seed)
                sign = 1.0 if hib else -1.0
                clo, chi = sorted((sign * lo, sign * hi))
                verdict = _verdict(sign * d, clo, chi, tol)
            rcov = float(row.get(f"{m}_cov", float("nan")))
            if verdict not in ("regression", "insufficient") and max_coverage_drop is not None \
                    and bcov - rcov > max_coverage_drop:
                verdict = "coverage drop"
            result.checks.append(
                MetricCheck(
                    subset=row["subset"],
                    metric=m,
                    baseline=float(bs.sum() / bn.sum()) if bn.sum() else float("nan"),
                    run=float(rs.sum() / rn.sum()) if rn.sum() else float("nan"),
                    delta=d,
                    ci_low=lo,
                    ci_high=hi,
                    tolerance=tol,
                    paired_sessions=len(merged),
                    run_coverage=rcov,
                    baseline_coverage=float(bcov),
                    higher_is_better=hib,
                    verdict=verdict,
                )
            )
    return result


def format_table(result: GateResult) -> str:
    """A plain-text table of the checks, then the verdict line."""
    head = ["subset", "metric", "baseline", "run", "delta", "95% CI", "tol", "pairs", "cov run/base", "verdict"]
    lines = [head]
    for c in result.checks:
        ci = "-" if np.isnan(c.ci_low) else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        arrow = "" if c.higher_is_better else " (lower=better)"
        lines.append(
            [
                c.subset,
                c.metric + arrow,
                f"{c.baseline:.4f}",
                f"{c.run:.4f}",
                f"{c.delta:+.4f}",
                ci,
                f"{c.tolerance:g}",
                str(c.paired_sessions),
                f"{c.run_coverage:.0%}/{c.baseline_coverage:.0%}",
                c.verdict.upper() if c.verdict in FAILING else c.verdict,
            ]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    text += [f"note: {n}" for n in result.notes]
    n_bad = sum(c.verdict in FAILING for c in result.checks)
    n_few = sum(c.verdict == "insufficient" for c in result.checks)
    if result.verdict == "insufficient":
        text.append(f"gate: INSUFFICIENT ({n_few} of {len(result.checks)} checks have fewer than "
                    f"{result.min_pairs} paired sessions; exit 3)")
    else:
        text.append(f"gate: {'FAIL' if n_bad else 'PASS'} ({n_bad} failing of {len(result.checks)} checks)")
    return "\n".join(text)


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one testsuite, one testcase per (subset, metric); a regression is a <failure>."""
    checks = result.checks
    suite = ET.Element(
        "testsuite",
        name="micebench.gate",
        tests=str(len(checks)),
        failures=str(sum(c.verdict in FAILING for c in checks)),
        errors=str(sum(c.verdict == "insufficient" for c in checks)),
        skipped=str(sum(c.verdict == "no data" for c in checks)),
    )
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"micebench.gate.{c.subset}", name=c.metric)
        detail = (
            f"baseline {c.baseline:.4f}, run {c.run:.4f}, delta {c.delta:+.4f}, 95% CI [{c.ci_low:+.4f}, "
            f"{c.ci_high:+.4f}], tolerance {c.tolerance:g}, {c.paired_sessions} paired sessions"
        )
        if c.verdict in FAILING:
            what = "regressed" if c.verdict == "regression" else "lost coverage"
            detail += f"; coverage run {c.run_coverage:.3f}, baseline {c.baseline_coverage:.3f}"
            ET.SubElement(case, "failure", message=f"{c.metric} {what} on {c.subset}").text = detail
        elif c.verdict == "insufficient":
            ET.SubElement(case, "error", message=f"insufficient: {c.paired_sessions} paired sessions, fewer than "
                          f"--min-pairs {result.min_pairs}").text = detail
        elif c.verdict == "no data":
            ET.SubElement(case, "skipped", message="no scored turns on one side")
        ET.SubElement(case, "system-out").text = detail
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"
