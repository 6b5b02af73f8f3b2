"""What the report needs to know about a run: its table, what each metric means, a short name, and
whether runs can be compared at all.

:func:`read_run` is the one place the report reads a run; everything else in the report works on
the :class:`ReportRun` it returns.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from micebench import tables

ROLES = ("if", "cc", "ga", "other")
ROLE_NAMES = {"if": "instruction following", "cc": "content consistency", "ga": "global awareness", "other": "other"}


@dataclass(frozen=True)
class MetricInfo:
    """What a metric column means: its role, direction, declared range, and the cap its judge reports at."""

    column: str
    role: str = "other"
    higher_is_better: bool = True
    range: tuple[float | None, float | None] = (None, None)
    description: str = ""
    cap: float | None = None
    declared: bool = False  # from the judge's own spec, not guessed from the column name


@dataclass
class ReportRun:
    """One run as the report sees it. ``label`` is set by :func:`label_runs` once all runs are known."""

    path: Path
    manifest: dict[str, Any]
    turns: pd.DataFrame
    metrics: dict[str, MetricInfo]
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def editor(self) -> str:
        return str((self.manifest.get("editor") or {}).get("name") or "?")

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)


def read_run(source: Any) -> ReportRun:
    """A run for the report from a run directory path or an already loaded run (``tables.RunData``)."""
    data = source if isinstance(source, tables.RunData) else tables.load_run(source)
    manifest = json.loads(json.dumps(data.manifest))  # a private copy: the report never changes a run
    columns = tables.metric_columns(data.turns)
    return ReportRun(data.path, manifest, data.turns, {c: metric_info(c, manifest) for c in columns})


def metric_info(column: str, manifest: dict[str, Any]) -> MetricInfo:
    """The meaning of ``column`` from the judge's specs in ``manifest``; guessed from its name for old runs."""
    for judge in manifest.get("judges") or []:
        prefix = f"{judge.get('name')}_"
        for spec in judge.get("metric_specs") or []:
            if isinstance(spec, dict) and column in (f"{prefix}{spec.get('name')}", spec.get("name")):
                lo, hi = (list(spec.get("range") or (None, None)) + [None, None])[:2]
                cap = hi if "psnr" in column.lower() and hi is not None else None
                return MetricInfo(column, spec.get("role", "other"), bool(spec.get("higher_is_better", True)),
                                  (lo, hi), str(spec.get("description", "")), cap, declared=True)
    return _guess(column, manifest)


def _guess(column: str, manifest: dict[str, Any]) -> MetricInfo:
    """For manifests written before judges declared their metrics: role from the suffix, direction from
    the name, and PSNR's cap from the judge's ``psnr_cap`` (100 dB by default)."""
    suffix = column.rsplit("_", 1)[-1]
    role = suffix if suffix in ("if", "cc", "ga") else "other"
    cap = None
    if "psnr" in column.lower():
        cap = 100.0
        for judge in manifest.get("judges") or []:
            if column.startswith(f"{judge.get('name')}_"):
                cap = float((judge.get("config") or {}).get("psnr_cap", cap))
    rng = (0.0, 1.0) if role != "other" else (0.0, cap) if cap else (None, None)
    return MetricInfo(column, role, tables.higher_is_better(column), rng, "", cap)


def label_runs(runs: list[ReportRun]) -> None:
    """Name each run by its editor; runs of the same editor are told apart by config hash, else run id."""
    counts = Counter(r.editor for r in runs)
    for r in runs:
        if counts[r.editor] == 1:
            r.label = r.editor
            continue
        same = [o for o in runs if o.editor == r.editor]
        cfgs = {str((o.manifest.get("editor") or {}).get("config_hash")) for o in same}
        cfg = str((r.manifest.get("editor") or {}).get("config_hash") or "")
        r.label = f"{r.editor} ({cfg[:8]})" if len(cfgs) == len(same) and cfg else f"{r.editor} ({r.run_id})"


def ordered_metrics(runs: list[ReportRun]) -> list[MetricInfo]:
    """Every metric of every run, IF first, then CC, GA and the rest, each group in table order."""
    seen: dict[str, MetricInfo] = {}
    for r in runs:
        for c, info in r.metrics.items():
            seen.setdefault(c, info)
    return sorted(seen.values(), key=lambda m: ROLES.index(m.role) if m.role in ROLES else len(ROLES))


def _suite_key(m: dict[str, Any]) -> tuple:
    s = m.get("suite") or {}
    return (s.get("name"), str(s.get("version")), json.dumps(s.get("options") or {}, sort_keys=True))


def _judge_desc(j: dict[str, Any]) -> str:
    bits = [f"{j.get('name')}@{j.get('version', '')}"]
    if j.get("protocol"):
        bits.append(f"protocol {j['protocol']}")
    if j.get("random_weights"):
        bits.append("RANDOM WEIGHTS")
    return " ".join(bits)


def _judge_key(j: dict[str, Any]) -> tuple:
    return (j.get("name"), str(j.get("version")), json.dumps(j.get("config") or {}, sort_keys=True),
            j.get("prompt_hash") or "", j.get("protocol") or "", bool(j.get("random_weights")))


def comparability_warnings(runs: list[ReportRun]) -> list[str]:
    """Why the runs on the page should not be read as one comparison (empty when they can)."""
    out: list[str] = []
    if len(runs) > 1:
        suites = {_suite_key(r.manifest) for r in runs}
        if len(suites) > 1:
            desc = "; ".join(f"{r.label}: {_suite_desc(r.manifest)}" for r in runs)
            out.append(f"The runs evaluate different suites or suite options ({desc}). Their numbers are not "
                       "comparable.")
        digests = {(r.manifest.get("suite") or {}).get("digest") for r in runs}
        if len(suites) == 1 and len(digests) > 1:
            out.append("The runs' suites have the same name and version but different contents (suite digest "
                       "differs): sessions may have changed.")
        by_name: dict[str, set[tuple]] = {}
        for r in runs:
            for j in r.manifest.get("judges") or []:
                by_name.setdefault(str(j.get("name")), set()).add(_judge_key(j))
        for name, keys in sorted(by_name.items()):
            users = [r.label for r in runs if any(str(j.get("name")) == name for j in r.manifest.get("judges") or [])]
            if len(keys) > 1:
                out.append(f"Judge {name!r} ran with different versions, configurations, prompts or protocols "
                           f"across runs ({', '.join(_judges_of(r, name) for r in runs if r.label in users)}): "
                           "its scores are not comparable.")
            elif len(users) < len(runs):
                out.append(f"Judge {name!r} scored only some runs ({', '.join(users)}).")
        sessions = [set(r.turns["session_id"].astype(str)) for r in runs]
        common = set.intersection(*sessions)
        if any(s != common for s in sessions):
            counts = ", ".join(f"{r.label}: {len(s)}" for r, s in zip(runs, sessions, strict=True))
            out.append(f"The runs cover different sessions ({counts}; {len(common)} in common): means are over "
                       "different sessions.")
    for r in runs:
        for j in r.manifest.get("judges") or []:
            if j.get("random_weights"):
                out.append(f"{r.label}: judge {j.get('name')!r} ran with random weights (a test setting); its "
                           "scores mean nothing.")
    return out


def _suite_desc(m: dict[str, Any]) -> str:
    s = m.get("suite") or {}
    opts = s.get("options") or {}
    return f"{s.get('name')}@{s.get('version')}" + (f" {json.dumps(opts, sort_keys=True)}" if opts else "")


def _judges_of(r: ReportRun, name: str) -> str:
    js = [j for j in r.manifest.get("judges") or [] if str(j.get("name")) == name]
    return f"{r.label}: " + ", ".join(f"{_judge_desc(j)} config {json.dumps(j.get('config') or {}, sort_keys=True)}"
                                      for j in js)


def run_facts(r: ReportRun) -> dict[str, Any]:
    """One row of the runs table."""
    m, df = r.manifest, r.turns
    suite, editor = m.get("suite") or {}, m.get("editor") or {}
    return {
        "label": r.label,
        "editor": r.editor,
        "config_hash": editor.get("config_hash") or "",
        "run_id": r.run_id,
        "suite": f"{suite.get('name')}@{suite.get('version')}",
        "judges": ", ".join(_judge_desc(j) for j in m.get("judges") or []),
        "created": str(m.get("created") or "")[:16].replace("T", " "),
        "finished": bool(m.get("finished")),
        "sessions": int(df["session_id"].nunique()),
        "turns": len(df),
        "errors": int((df["status"] != "ok").sum()),
    }
