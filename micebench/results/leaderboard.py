"""Leaderboard CSVs: one row per (suite + version, subset, editor + config hash, judges + hash, micebench version).

The schema is documented in leaderboards/README.md. What this module promises:

* ``publish`` adds a run's rows and replaces an older row with the same key; every other row is kept.
* Column order and number format are stable (keys, run info, then each metric's columns, metrics
  sorted by name; numbers with 4 decimals, empty for no value; rows sorted by key), so a diff of the
  CSV shows only what changed.
* Beside ``<name>.csv`` a folder ``<name>.sessions/`` holds, per row, ``<row_id>.csv`` with the
  per-session means and scored-turn counts the gate's paired bootstrap needs, and ``<name>.metrics.json``
  the metric specs (role, direction) of the board's columns, as the runs' judges declared them.
* Publishing refuses runs scored with random weights and refuses to mix judge protocols in one board.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micebench import csvsafe
from micebench.results import aggregate as tables
from micebench.results.run import ResultsError, Run
from micebench.spec import MetricSpec

KEY_COLUMNS = (
    "suite",
    "suite_version",
    "subset",
    "editor",
    "editor_config_hash",
    "judges",
    "judge_hash",
    "micebench_version",
)
INFO_COLUMNS = ("row_id", "run_id", "created", "git_sha", "suite_digest", "judge_protocols", "sessions", "turns")
DEFAULT_PROTOCOL = "strict"
ALL_SUBSETS = "all"
_SUFFIX = re.compile(r"^(?P<metric>.+?)(?P<suffix>_lo|_hi|_cov|_t\d+|_succ_t\d+)?$")


def judge_fields(run: Run) -> tuple[str, str]:
    """(``judges``, ``judge_hash``) of a run: the judge keys with versions, and a hash of every judge's
    name, key, version, config and prompt hash (so a changed profile or prompt is a different row)."""
    judges = run.manifest.judges
    label = ";".join(sorted(j.label for j in judges))
    # a field the manifest does not have hashes as null, as it always did, so old boards stay comparable
    ident = sorted(
        json.dumps(
            {k: getattr(j, k) if k in j.model_fields_set else None
             for k in ("name", "key", "version", "config", "prompt_hash")},
            sort_keys=True,
            default=str,
        )
        for j in judges
    )
    return label, hashlib.sha256("\n".join(ident).encode()).hexdigest()[:12]


def judge_protocols(run: Run) -> str:
    """``name:protocol`` of each judge of the run, sorted, ``;``-separated (a judge that names none: strict)."""
    return ";".join(sorted(f"{j.name}:{j.protocol or DEFAULT_PROTOCOL}" for j in run.manifest.current_judges()))


def _protocol_map(label: str) -> dict[str, str]:
    return dict(p.split(":", 1) for p in str(label).split(";") if ":" in p)


def protocol_clash(a: str, b: str) -> str:
    """'' when two ``judge_protocols`` labels agree on every judge they share, else what differs.
    A row of an older board has no label: every judge of the other side is compared with strict."""
    ma, mb = _protocol_map(a), _protocol_map(b)
    names = set(ma) | set(mb) if not (ma and mb) else set(ma) & set(mb)
    diff = [f"{n}: {ma.get(n, DEFAULT_PROTOCOL)} vs {mb.get(n, DEFAULT_PROTOCOL)}"
            for n in sorted(names) if ma.get(n, DEFAULT_PROTOCOL) != mb.get(n, DEFAULT_PROTOCOL)]
    return ", ".join(diff)


def check_publishable(run: Run) -> None:
    """ResultsError when a run's numbers must not be published or gated: a judge ran on random weights."""
    random = [j.name for j in run.manifest.current_judges() if j.random_weights]
    if random:
        raise ResultsError(
            f"{run.root}: judge(s) {', '.join(random)} scored with random weights (allow_random_weights, "
            "for tests only); these numbers are not publishable. Score the run with real weights "
            "(`micebench score RUN --judge NAME -J checkpoint=...`)."
        )


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in KEY_COLUMNS)


def row_id(row: dict[str, Any]) -> str:
    """A short stable id of a row's key; names the row's session sidecar file."""
    return hashlib.sha256("\x1f".join(row_key(row)).encode()).hexdigest()[:12]


def _subsets(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    names = sorted(df["subset"].fillna("").astype(str).unique()) if "subset" in df.columns else [""]
    if len(names) == 1:
        return [(names[0] or ALL_SUBSETS, df)]
    return [(n or "-", df[df["subset"].astype(str) == n]) for n in names] + [(ALL_SUBSETS, df)]


def rows_for_run(
    run: Run, *, threshold: float = tables.DEFAULT_THRESHOLD, n_boot: int = tables.DEFAULT_BOOTSTRAP, seed: int = 0
) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """The leaderboard rows of one run (one per subset, plus ``all`` when there are several) with their
    per-session tables."""
    m = run.manifest
    for what, value in (("suite.name", m.suite.name), ("editor.name", m.editor.name)):
        if not value:
            raise ResultsError(f"{run.root / 'manifest.json'}: {what} is missing")
    judges, judge_hash = judge_fields(run)
    df = run.turns()
    specs = run.metric_specs()
    metrics = list(specs)
    if not metrics:
        raise ResultsError(f"{run.root}: the per-turn table has no metric columns (was the run judged?)")
    out = []
    for subset, part in _subsets(df):
        row: dict[str, Any] = {
            "suite": m.suite.name,
            "suite_version": m.suite.version,
            "subset": subset,
            "editor": m.editor.name,
            "editor_config_hash": m.editor.config_hash,
            "judges": judges,
            "judge_hash": judge_hash,
            "micebench_version": m.micebench_version,
            "run_id": run.run_id,
            "created": m.created,
            "git_sha": m.git_sha or "",
            "suite_digest": m.suite.digest,
            "judge_protocols": judge_protocols(run),
            "sessions": int(part["session_id"].nunique()),
            "turns": len(part),
        }
        row["row_id"] = row_id(row)
        for r in tables.overall(part, metrics, n_boot=n_boot, seed=seed).itertuples():
            row[r.metric], row[f"{r.metric}_lo"], row[f"{r.metric}_hi"] = r.mean, r.ci_low, r.ci_high
            row[f"{r.metric}_cov"] = r.coverage
        for r in tables.by_turn(part, metrics, n_boot=0).itertuples():
            row[f"{r.metric}_t{r.turn}"] = r.mean
        for r in tables.cumulative_success(part, None, threshold, specs=specs, n_boot=0).itertuples():
            row[f"{r.metric}_succ_t{r.turn}"] = r.success
        out.append((row, tables.session_means(part, metrics)))
    return out


def _column_rank(col: str) -> tuple:
    if col in KEY_COLUMNS:
        return (0, KEY_COLUMNS.index(col), "")
    if col in INFO_COLUMNS:
        return (1, INFO_COLUMNS.index(col), "")
    match = _SUFFIX.match(col)
    suffix = match.group("suffix") or ""
    order = {"": 0, "_lo": 1, "_hi": 2, "_cov": 3}
    if suffix in order:
        rank = order[suffix]
    elif suffix.startswith("_succ_t"):
        rank = 1000 + int(suffix[7:])
    else:
        rank = 10 + int(suffix[2:])
    return (2, match.group("metric"), rank)


def ordered_columns(columns: list[str] | set[str]) -> list[str]:
    """The canonical column order: key columns, run info, then per metric (sorted): mean, lo, hi, cov, per turn,
    cumulative success per turn."""
    return sorted(set(columns) | set(KEY_COLUMNS) | set(INFO_COLUMNS), key=_column_rank)


def format_value(value: Any) -> str:
    """Numbers with 4 decimals, integers as such, missing as ''."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.4f}"
    return str(value)


def read_board(path: str | Path) -> pd.DataFrame:
    """A leaderboard CSV as strings (nothing re-parsed, so ids like '0012' survive); empty if it does not exist."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=ordered_columns([]))
    try:
        return csvsafe.restore_frame(pd.read_csv(path, dtype=str, keep_default_na=False))
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not a readable CSV ({e})") from e


def sessions_dir(board: str | Path) -> Path:
    """The folder of per-session sidecars of a leaderboard file: ``<name>.sessions/`` beside it."""
    board = Path(board)
    return board.with_name(board.stem + ".sessions")


def format_session_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if np.isfinite(value) else ""
    return str(value)


def write_sessions(path: Path, frame: pd.DataFrame) -> None:
    """Write one row's per-session sidecar (session_id, subset, ``<metric>``, ``<metric>_n``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(csvsafe.row(list(frame.columns)))
        for rec in frame.itertuples(index=False):
            # exact round trip: the gate rebuilds sums as mean * n and must get the published mean back
            w.writerow(csvsafe.row([format_session_value(v) for v in rec]))


def read_sessions(board: str | Path, rid: str) -> pd.DataFrame:
    """The per-session sidecar of row ``rid`` (session_id, subset, ``<metric>``, ``<metric>_n``)."""
    path = sessions_dir(board) / f"{rid}.csv"
    if not path.is_file():
        raise ResultsError(f"{path}: per-session file of leaderboard row {rid} is missing (republish the baseline)")
    df = pd.read_csv(path, dtype={"session_id": str, "subset": str}, keep_default_na=False, na_values=[""])
    return csvsafe.restore_frame(df)


def specs_path(board: str | Path) -> Path:
    """The metric specs of a leaderboard file: ``<name>.metrics.json`` beside it."""
    board = Path(board)
    return board.with_name(board.stem + ".metrics.json")


def read_specs(board: str | Path) -> dict[str, MetricSpec]:
    """The board's column -> MetricSpec ({} for a board published before specs were recorded)."""
    path = specs_path(board)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: MetricSpec.model_validate(spec) for name, spec in data.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, ValueError) as e:
        raise ResultsError(f"{path}: not a metric-spec file ({e})") from e


def _merge_specs(board: Path, runs: list[Run]) -> dict[str, MetricSpec]:
    specs = read_specs(board)
    where = {name: str(specs_path(board)) for name in specs}
    for run in runs:
        for name, spec in run.metric_specs().items():
            if name in specs and specs[name] != spec:
                raise ResultsError(
                    f"{run.root}: metric {name} is declared differently than in {where[name]} "
                    f"({spec.role}, higher_is_better={spec.higher_is_better} vs {specs[name].role}, "
                    f"higher_is_better={specs[name].higher_is_better}); publish it to another board"
                )
            specs.setdefault(name, spec)
            where.setdefault(name, str(run.root))
    return dict(sorted(specs.items()))


def publish(
    runs: list[Run], board: str | Path, **kw: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write the runs' rows into ``board`` (created if missing); returns (added rows, replaced rows).

    Two runs that yield the same key in one call are an error: which one to keep is the caller's choice.
    So are a run scored with random weights and a run whose judge protocol (e.g. the mice judge's
    ``upstream`` reading) differs from another row's: their numbers do not rank together.
    """
    board = Path(board)
    new: dict[tuple[str, ...], tuple[dict[str, Any], pd.DataFrame, Path]] = {}
    for run in runs:
        check_publishable(run)
        for row, sessions in rows_for_run(run, **kw):
            key = row_key(row)
            if key in new:
                clash = dict(zip(KEY_COLUMNS, key, strict=True))
                raise ResultsError(f"runs {new[key][2]} and {run.root} both give the row {clash}")
            new[key] = (row, sessions, run.root)
    old = read_board(board)
    missing = [c for c in KEY_COLUMNS if c not in old.columns]
    if missing:
        raise ResultsError(f"{board}: not a micebench leaderboard (missing column(s) {', '.join(missing)})")
    kept, replaced = [], []
    for rec in old.to_dict("records"):
        (replaced if row_key(rec) in new else kept).append(rec)
    seen: list[tuple[str, str]] = [(str(r.get("judge_protocols", "")), f"{board} row {r.get('row_id')}") for r in kept]
    for row, _, path in new.values():
        for label, where in seen:
            clash = protocol_clash(row["judge_protocols"], label)
            if clash:
                raise ResultsError(f"{path}: judge protocol differs from {where} ({clash}); "
                                   "numbers read under different protocols do not rank together: use another board")
        seen.append((row["judge_protocols"], str(path)))
    specs = _merge_specs(board, runs)
    rows = kept + [row for row, _, _ in new.values()]
    columns = ordered_columns({c for r in rows for c in r})
    rows.sort(key=row_key)
    board.parent.mkdir(parents=True, exist_ok=True)
    tmp = board.with_name(board.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(csvsafe.row(columns))
        for r in rows:
            w.writerow(csvsafe.row([format_value(r.get(c)) for c in columns]))
    for row, sessions, _ in new.values():
        write_sessions(sessions_dir(board) / f"{row['row_id']}.csv", sessions)
    spec_tmp = specs_path(board).with_name(specs_path(board).name + ".tmp")
    spec_tmp.write_text(json.dumps({k: v.model_dump(mode="json") for k, v in specs.items()}, indent=1) + "\n")
    spec_tmp.replace(specs_path(board))
    tmp.replace(board)
    return [row for row, _, _ in new.values()], replaced


def metric_names(board: pd.DataFrame) -> list[str]:
    """The metrics of a leaderboard frame: columns with a ``<metric>_cov`` sibling."""
    cols = set(board.columns)
    return [c for c in board.columns if f"{c}_cov" in cols]


def ranked(board: pd.DataFrame, sort: str | None = None, columns: list[str] | None = None,
           specs: dict[str, MetricSpec] | None = None) -> pd.DataFrame:
    """The board ranked best-first by ``sort`` within each (suite, suite version, subset), with a ``rank`` column.

    ``specs`` (``read_specs(file)``) say each metric's role and direction. ``sort`` defaults to the first
    metric whose role is ``if``, else the first metric. Lower-is-better metrics rank ascending (a metric
    without a spec counts as higher-is-better); empty values go last, unranked. ``columns`` picks what to
    show (default: subset, editor, config hash, judges, each metric's mean, and ``min_cov``, the lowest
    coverage of the row over its metrics). A file without micebench keys (e.g. literature.csv) is
    ranked as one group and shown whole.
    """
    metrics = metric_names(board)
    if sort is None and metrics:
        sort = next((m for m in metrics if tables.role(m, specs) == "if"), metrics[0])
    if sort is not None and sort not in board.columns:
        raise ResultsError(f"cannot sort by {sort!r}: no such column (metrics: {', '.join(metrics) or 'none'})")
    out = board.copy()
    if metrics:
        covs = out[[f"{m}_cov" for m in metrics]].apply(lambda c: pd.to_numeric(c.replace("", np.nan)))
        out["min_cov"] = [format_value(v) for v in covs.min(axis=1)]
    if sort is not None:
        asc = not tables.higher_is_better(sort, specs)
        groups = [c for c in ("suite", "suite_version", "subset") if c in out.columns]
        out["_value"] = pd.to_numeric(out[sort].replace("", np.nan), errors="coerce")
        out["_group"] = out[groups].astype(str).agg("\x1f".join, axis=1) if groups else ""
        out = out.sort_values(["_group", "_value"], ascending=[True, asc], na_position="last", kind="stable")
        ranks = out.groupby("_group", sort=False)["_value"].rank(ascending=asc, method="min")
        out.insert(0, "rank", [("" if np.isnan(r) else str(int(r))) for r in ranks])
        out = out.drop(columns=["_value", "_group"])
    if columns is None:
        base = [c for c in ("subset", "editor", "editor_config_hash", "judges") if c in out.columns]
        columns = base + metrics + ["min_cov"] if metrics else [c for c in out.columns if c != "rank"]
    unknown = [c for c in columns if c not in out.columns]
    if unknown:
        raise ResultsError(f"unknown column(s) {', '.join(unknown)}; the file has: {', '.join(board.columns)}")
    return out[(["rank"] if "rank" in out.columns else []) + [c for c in columns if c != "rank"]].reset_index(drop=True)
