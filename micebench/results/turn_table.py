"""The per-turn table: one row per (session, turn), built from a run's record.

Columns (documented in the README): suite, suite_version, subset, session_id, turn (1-based),
task_type, instruction, formatted_instruction, effective_instruction, status, error, input_hash,
output_hash, seconds, and per judge metric ``<judge>_<metric>`` (NaN without a score) with
``<judge>_<metric>_status`` (ok | unscored | not_applicable | not_run), ``_reason`` and ``_votes``.
A metric whose name already starts with its judge's name is not prefixed twice (``clip_i_src``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from micebench import csvsafe
from micebench.results.manifest import RunManifest

if TYPE_CHECKING:
    import pandas as pd

    from micebench.store import RunStore

BASE_COLUMNS = [
    "suite",
    "suite_version",
    "subset",
    "session_id",
    "turn",
    "task_type",
    "instruction",
    "formatted_instruction",
    "effective_instruction",
    "status",
    "error",
    "input_hash",
    "output_hash",
    "seconds",
]


def metric_column(judge_name: str, metric: str) -> str:
    """The per-turn table column of a judge's metric: ``<judge>_<metric>``, without repeating the judge's
    name when the metric already starts with it (clip's ``clip_i_src`` is ``clip_i_src``, not
    ``clip_clip_i_src``)."""
    return metric if metric.startswith(f"{judge_name}_") else f"{judge_name}_{metric}"


def build_turn_table(store: RunStore) -> pd.DataFrame:
    import pandas as pd

    manifest = RunManifest.model_validate(store.read_manifest())
    suite_version = manifest.suite.version
    # The judges the manifest lists, in order; a later entry with the same name replaces an earlier one.
    judges = manifest.current_judges()
    key_to_name = {j.key: j.name for j in judges}
    metric_cols: list[tuple[str, str]] = [(j.name, m) for j in judges for m in j.metrics]

    judged: dict[tuple[str, int, str], tuple] = {}
    for sid, turn, key, _jname, metric, score, status, votes, reason in store.judgement_rows():
        name = key_to_name.get(key)
        if name is None:
            continue
        if (name, metric) not in metric_cols:
            metric_cols.append((name, metric))
        judged[(sid, turn, metric_column(name, metric))] = (score, status, votes, reason)

    records = store.turn_records()
    rows = []
    for s in store.sessions():
        for t, turn in enumerate(s.turns):
            rec = records.get((s.id, t))
            row = {
                "suite": s.suite,
                "suite_version": suite_version,
                "subset": s.subset,
                "session_id": s.id,
                "turn": t + 1,
                "task_type": turn.task_type,
                "instruction": turn.instruction,
                "formatted_instruction": turn.formatted_instruction or "",
                "effective_instruction": (rec.effective_instruction if rec else None) or "",
                "status": rec.status if rec else "pending",
                "error": (rec.error if rec else None) or "",
                "input_hash": (rec.input_hash if rec else None) or "",
                "output_hash": (rec.output_hash if rec else None) or "",
                "seconds": rec.seconds if rec and rec.seconds is not None else math.nan,
            }
            for name, metric in metric_cols:
                col = metric_column(name, metric)
                got = judged.get((s.id, t, col))
                if got is None:
                    row[col], row[f"{col}_status"], row[f"{col}_reason"], row[f"{col}_votes"] = (
                        math.nan,
                        "not_run",
                        "",
                        0,
                    )
                    continue
                score, status, votes, reason = got
                vote_list = json.loads(votes) if votes else []
                row[col] = score if score is not None else math.nan
                row[f"{col}_status"] = status
                row[f"{col}_reason"] = reason or ""
                row[f"{col}_votes"] = sum(v is not None for v in vote_list) if vote_list else int(score is not None)
            rows.append(row)
    columns = BASE_COLUMNS + [
        c
        for name, metric in metric_cols
        for c in (
            metric_column(name, metric),
            f"{metric_column(name, metric)}_status",
            f"{metric_column(name, metric)}_reason",
            f"{metric_column(name, metric)}_votes",
        )
    ]
    df = pd.DataFrame(rows, columns=columns)
    df["turn"] = df["turn"].astype("int64")
    return df


def export_turn_table(store: RunStore) -> pd.DataFrame:
    """Write turns.parquet and turns.csv (atomically) and return the table."""
    df = build_turn_table(store)
    root = Path(store.root)
    for name, write in (("turns.parquet", lambda p: df.to_parquet(p, index=False)),
                        ("turns.csv", lambda p: csvsafe.frame(df).to_csv(p, index=False))):
        tmp = root / f".{name}.tmp"
        write(tmp)
        tmp.replace(root / name)
    return df
