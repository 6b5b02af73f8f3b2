"""``manifest.json`` as typed records: :class:`RunManifest` and its suite, editor and judge entries.

Tolerant both ways: a manifest written by an older micebench (fields missing) validates with defaults,
and one written by a newer writer keeps the fields this version does not know (``extra="allow"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from micebench.results.errors import ResultsError
from micebench.spec import MetricSpec, as_metric_spec

MANIFEST = "manifest.json"


class _Record(BaseModel):
    # frozen: a manifest read from disk is a record, not a scratchpad; extra: keep what newer writers add
    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)


class SuiteInfo(_Record):
    name: str = ""
    version: str = ""
    source: str = ""
    options: dict[str, Any] = Field(default_factory=dict)
    digest: str = ""
    n_sessions: int | None = None


class EditorInfo(_Record):
    name: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    describe: dict[str, Any] | None = None


class JudgeInfo(_Record):
    """One judge of the run as the manifest records it (its ``describe()`` plus key and metric specs)."""

    name: str = Field(min_length=1)
    key: str = ""
    version: str = ""
    metrics: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    prompt_hash: str = ""
    metric_specs: list[MetricSpec] | None = None
    protocol: str = Field("strict", description="How the judge reads answers; absent in a manifest means strict.")

    @field_validator("protocol", mode="before")
    @classmethod
    def _absent_is_strict(cls, v: Any) -> Any:
        return "strict" if v is None or v == "" else v
    random_weights: bool = Field(False, description="Scored with random weights (tests only): never publishable.")

    @property
    def label(self) -> str:
        return f"{self.key or self.name}@{self.version}"

    def specs(self) -> list[MetricSpec]:
        """The judge's metric specs: as recorded, else (older manifests) as its registered class declares
        them, else the bare metric names (role other, higher is better)."""
        if self.metric_specs is not None:
            return list(self.metric_specs)
        declared = _declared_specs(self.name)
        if declared:
            by_name = {s.name: s for s in declared}
            names = self.metrics or list(by_name)
            return [by_name.get(n) or as_metric_spec(n) for n in names]
        return [as_metric_spec(n) for n in self.metrics]


def _declared_specs(judge_name: str) -> list[MetricSpec]:
    """What a registered judge class declares (for manifests written before specs were recorded)."""
    from micebench import registry
    from micebench.judges.base import declared_metric_specs

    try:
        cls = registry.load("judges", judge_name)
    except (registry.UnknownNameError, ImportError):
        return []
    return list(declared_metric_specs(cls))


class RunManifest(_Record):
    """``manifest.json``: versions, suite, editor and judges, seeds, command line, times."""

    run_id: str = ""
    micebench_version: str = ""
    git_sha: str | None = None
    python: str | None = None
    torch: str | None = None
    platform: str | None = None
    created: str = ""
    finished: str | None = None
    command_line: str = ""
    seed: int | None = None
    batch_size: int | None = None
    turn_timeout: float | None = None
    suite: SuiteInfo = Field(default_factory=SuiteInfo)
    editor: EditorInfo = Field(default_factory=EditorInfo)
    judges: list[JudgeInfo] = Field(default_factory=list)
    counts: dict[str, int] | None = None

    @classmethod
    def read(cls, path: str | Path) -> RunManifest:
        """Read and validate a manifest file; ResultsError names the file and the bad field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ResultsError(f"{path.parent}: no {MANIFEST} (is this a run directory?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResultsError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ResultsError(f"{path}: expected a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ResultsError(f"{path}: field {where!r}: {err['msg']}") from e

    def current_judges(self) -> list[JudgeInfo]:
        """The judges whose scores the run holds: a later entry with a judge's name replaces an earlier one."""
        by_name: dict[str, JudgeInfo] = {}
        for j in self.judges:
            by_name[j.name] = j  # keeps the first entry's place, so re-scoring does not move columns
        return list(by_name.values())

    @property
    def judges_label(self) -> str:
        return ", ".join(j.label for j in self.current_judges()) or "-"
