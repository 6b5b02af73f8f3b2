"""What the report needs to know about a run: its table, what each metric means, a short name, and
whether runs can be compared at all.

:func:`read_run` is the one place the report reads a run; everything else in the report works on
the :class:`ReportRun` it returns.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from micebench.spec import MetricSpec, as_metric_spec

if TYPE_CHECKING:
    import pandas as pd

    from micebench.results.manifest import JudgeInfo
    from micebench.results.run import Run

ROLES = ("if", "cc", "ga", "other")
ROLE_NAMES = {"if": "instruction following", "cc": "content consistency", "ga": "global awareness", "other": "other"}
UNIT_ROLES = ("if", "cc", "ga")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric column means (its spec, renamed to the column), and the cap its judge reports at."""

    spec: MetricSpec
    cap: float | None = None
    declared: bool = False  # the judge's own spec, not guessed from the column name of an old run

    @property
    def column(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better

    @property
    def range(self) -> tuple[float | None, float | None]:
        return self.spec.range

    @property
    def description(self) -> str:
        return self.spec.description


@dataclass
class ReportRun:
    """One run as the report sees it. ``label`` is set by :func:`label_runs` once all runs are known."""

    run: Run
    turns: pd.DataFrame
    metrics: dict[str, MetricInfo]
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def editor(self) -> str:
        return self.run.editor

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def judges(self) -> list[JudgeInfo]:
        return self.run.manifest.current_judges()

    @property
    def specs(self) -> dict[str, MetricSpec]:
        return {c: m.spec for c, m in self.metrics.items()}


def read_run(source: Any) -> ReportRun:
    """A run for the report from a run directory or a :class:`~micebench.results.run.Run`."""
    from micebench.results.run import open_run
    from micebench.results.turn_table import metric_column

    run = open_run(source)
    recorded = {}  # column -> judge, for judges whose manifest entry records their metric specs
    for j in run.manifest.current_judges():
        if j.metric_specs is not None:
            recorded.update({metric_column(j.name, s.name): j for s in j.metric_specs})
    metrics = {}
    for col, spec in run.metric_specs().items():
        if col in recorded:
            metrics[col] = MetricInfo(spec, _cap(spec), declared=True)
        elif spec != as_metric_spec(col):  # an old manifest: the spec its judge's class declares today
            guessed_cap = _guess(col, run).cap
            metrics[col] = MetricInfo(spec, guessed_cap if guessed_cap and _cap(spec) else _cap(spec), declared=True)
        else:  # neither the manifest nor the judge's class says what the metric means
            metrics[col] = _guess(col, run)
    return ReportRun(run, run.turns(), metrics)


def _cap(spec: MetricSpec) -> float | None:
    """A higher-is-better metric's finite upper bound, where a judge reports a value it cannot exceed (PSNR of
    identical images); a 0..1 IF / CC / GA score has none (its plot spans the whole range anyway)."""
    lo, hi = spec.range
    if hi is None or not spec.higher_is_better:
        return None
    if spec.role in UNIT_ROLES and (lo is None or lo >= 0) and hi <= 1:
        return None
    return float(hi)


def _guess(column: str, run: Run) -> MetricInfo:
    """For old runs whose judges declared nothing: role from the suffix, direction from the name, and a PSNR's
    cap from the judge's ``psnr_cap`` setting (100 dB by default)."""
    from micebench.results.turn_table import metric_column

    suffix = column.rsplit("_", 1)[-1]
    role = suffix if suffix in UNIT_ROLES else "other"
    name = column.lower()
    lower = any(m in name for m in ("lpips", "mse", "mae", "rmse", "_l1", "_l2", "dist", "error", "loss", "fid"))
    cap = None
    if "psnr" in name:
        cap = 100.0
        for j in run.manifest.current_judges():
            if column.startswith(metric_column(j.name, "")):
                cap = float(j.config.get("psnr_cap", cap))
    rng = (0.0, 1.0) if role != "other" else (0.0, cap) if cap else (None, None)
    spec = MetricSpec(name=column, role=role, higher_is_better=not lower, range=rng,
                      description="meaning guessed from the name (the run's judge declared none)")
    return MetricInfo(spec, cap, declared=False)


def label_runs(runs: list[ReportRun]) -> None:
    """Name each run by its editor; runs of the same editor are told apart by config hash, else run id."""
    counts = Counter(r.editor for r in runs)
    for r in runs:
        if counts[r.editor] == 1:
            r.label = r.editor
            continue
        same = [o for o in runs if o.editor == r.editor]
        cfgs = {o.run.manifest.editor.config_hash for o in same}
        cfg = r.run.manifest.editor.config_hash
        r.label = f"{r.editor} ({cfg[:8]})" if len(cfgs) == len(same) and cfg else f"{r.editor} ({r.run_id})"


def ordered_metrics(runs: list[ReportRun]) -> list[MetricInfo]:
    """Every metric of every run, IF first, then CC, GA and the rest, each group in table order."""
    seen: dict[str, MetricInfo] = {}
    for r in runs:
        for c, info in r.metrics.items():
            seen.setdefault(c, info)
    return sorted(seen.values(), key=lambda m: ROLES.index(m.role) if m.role in ROLES else len(ROLES))


def _suite_desc(r: ReportRun) -> str:
    s = r.run.manifest.suite
    return f"{s.name}@{s.version}" + (f" {json.dumps(s.options, sort_keys=True)}" if s.options else "")


def _judge_desc(j: JudgeInfo) -> str:
    return f"{j.name}@{j.version}" + (f" protocol {j.protocol}" if j.protocol != "strict" else "") + (
        " RANDOM WEIGHTS" if j.random_weights else "")


def _judge_key(j: JudgeInfo) -> tuple:
    return (j.version, json.dumps(j.config, sort_keys=True), j.prompt_hash, j.protocol, j.random_weights)


def comparability_warnings(runs: list[ReportRun]) -> list[str]:
    """Why the runs on the page should not be read as one comparison (empty when they can)."""
    out: list[str] = []
    if len(runs) > 1:
        suites = {_suite_desc(r) for r in runs}
        if len(suites) > 1:
            desc = "; ".join(f"{r.label}: {_suite_desc(r)}" for r in runs)
            out.append(f"The runs evaluate different suites or suite options ({desc}). Their numbers are not "
                       "comparable.")
        elif len({r.run.manifest.suite.digest for r in runs}) > 1:
            out.append("The runs' suites have the same name and version but different contents (suite digest "
                       "differs): sessions may have changed.")
        names = sorted({j.name for r in runs for j in r.judges})
        for name in names:
            users = [(r, j) for r in runs for j in r.judges if j.name == name]
            if len({_judge_key(j) for _, j in users}) > 1:
                desc = "; ".join(f"{r.label}: {_judge_desc(j)} config {json.dumps(j.config, sort_keys=True)}"
                                 for r, j in users)
                out.append(f"Judge {name!r} ran with different versions, configurations, prompts or protocols "
                           f"across runs ({desc}): its scores are not comparable.")
            elif len(users) < len(runs):
                out.append(f"Judge {name!r} scored only some runs ({', '.join(r.label for r, _ in users)}).")
        sessions = [set(r.turns["session_id"].astype(str)) for r in runs]
        common = set.intersection(*sessions)
        if any(s != common for s in sessions):
            counts = ", ".join(f"{r.label}: {len(s)}" for r, s in zip(runs, sessions, strict=True))
            out.append(f"The runs cover different sessions ({counts}; {len(common)} in common): means are over "
                       "different sessions.")
    for r in runs:
        for j in r.judges:
            if j.random_weights:
                out.append(f"{r.label}: judge {j.name!r} ran with random weights (a test setting); its scores "
                           "mean nothing.")
    return out


def run_facts(r: ReportRun) -> dict[str, Any]:
    """One row of the runs table."""
    m, df = r.run.manifest, r.turns
    return {
        "label": r.label,
        "editor": r.editor,
        "config_hash": m.editor.config_hash,
        "run_id": r.run_id,
        "suite": f"{m.suite.name}@{m.suite.version}",
        "judges": ", ".join(_judge_desc(j) for j in r.judges),
        "created": str(m.created or "")[:16].replace("T", " "),
        "finished": bool(m.finished),
        "sessions": int(df["session_id"].nunique()),
        "turns": len(df),
        "errors": int((df["status"] != "ok").sum()),
    }
