"""A run directory as a typed object: :class:`RunManifest` (what ran) and :class:`Run` (its results).

Every reader of a run directory goes through :func:`open_run`: the results commands, the report, the
leaderboard, the gate, the console summary after a run, and notebooks::

    import micebench
    run = micebench.open_run("runs/20261127-synth-oracle-1a2b")
    run.manifest.editor.name          # 'oracle'
    run.turns()                       # the per-turn DataFrame (plus run_id, editor, image paths)
    run.metric_specs()                # column -> MetricSpec (role, direction, range)
    run.images("s000")                # [source, turn 1 output, turn 2 output, ...] as paths

``RunManifest`` accepts the manifests older micebench versions wrote (missing fields get defaults)
and keeps fields it does not know (``extra="allow"``), so a newer writer does not break an older reader.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micebench.results.aggregate import check_turn_table, metric_columns
from micebench.results.errors import ResultsError
from micebench.results.manifest import MANIFEST, EditorInfo, JudgeInfo, RunManifest, SuiteInfo
from micebench.results.turn_table import build_turn_table, metric_column
from micebench.spec import MetricSpec, as_metric_spec

__all__ = ["ResultsError", "Run", "RunManifest", "JudgeInfo", "EditorInfo", "SuiteInfo", "metric_column", "open_run"]

if TYPE_CHECKING:
    import pandas as pd

TURNS_PARQUET = "turns.parquet"


class Run:
    """One run directory: its manifest, per-turn table, metric specs and images."""

    def __init__(self, root: str | Path, manifest: RunManifest) -> None:
        self.root = Path(root)
        self.manifest = manifest

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r}, editor={self.editor!r}, suite={self.manifest.suite.name!r})"

    # -- identity ---------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.manifest.run_id or self.root.name

    @property
    def editor(self) -> str:
        return self.manifest.editor.name or "?"

    @property
    def label(self) -> str:
        """A short name for tables and plots: the editor, and the run id when it is not just that."""
        return self.editor if self.run_id in (self.editor, "") else f"{self.editor} ({self.run_id})"

    # -- the per-turn table ---------------------------------------------------------------------
    @cached_property
    def _table(self) -> pd.DataFrame:
        import pandas as pd

        pq = self.root / TURNS_PARQUET
        if pq.is_file():
            try:
                df = pd.read_parquet(pq)
            except (OSError, ValueError) as e:
                raise ResultsError(f"{pq}: cannot be read ({e})") from e
            where = str(pq)
        else:
            from micebench.store import RunStore, RunStoreError

            try:
                store = RunStore.open(self.root)
            except RunStoreError as e:
                raise ResultsError(f"{self.root}: no {TURNS_PARQUET} and no readable record ({e})") from e
            try:
                df = build_turn_table(store)
            finally:
                store.close()
            where = str(self.root)
        df = df.rename(columns=self._undoubled(df.columns))
        check_turn_table(df, where=where)
        return df.assign(turn=df["turn"].astype(int))

    def _undoubled(self, columns: Any) -> dict[str, str]:
        """Old tables named clip's ``clip_i_src`` ``clip_clip_i_src``: map such columns to today's names."""
        renames = {}
        for j in self.manifest.current_judges():
            doubled = f"{j.name}_{j.name}_"
            renames.update({c: c[len(j.name) + 1:] for c in columns if c.startswith(doubled)})
        return renames

    def turns(self) -> pd.DataFrame:
        """The per-turn table (one row per session and turn, the README's columns) with ``run_id`` and
        ``editor`` columns first and ``input_path`` / ``output_path`` (absolute image paths, '' when there
        is no image) after the hashes. A fresh copy each call."""
        df = self._table.copy()
        df.insert(0, "editor", self.editor)
        df.insert(0, "run_id", self.run_id)
        images = self.root.resolve() / "images"
        at = df.columns.get_loc("output_hash") + 1 if "output_hash" in df.columns else len(df.columns)
        for name, col in (("output_path", "output_hash"), ("input_path", "input_hash")):
            hashes = df[col].fillna("").astype(str) if col in df.columns else [""] * len(df)
            df.insert(at, name, [str(images / f"{h}.png") if h else "" for h in hashes])
        return df

    # -- metrics ------------------------------------------------------------------------------
    def metric_specs(self) -> dict[str, MetricSpec]:
        """Per metric column of the turn table, in table order: its spec, renamed to the column.

        Specs come from the manifest (what each judge declared); a column no judge declared (a judge
        that returned an undeclared metric) gets a bare spec: role other, higher is better.
        """
        declared: dict[str, MetricSpec] = {}
        for j in self.manifest.current_judges():
            for s in j.specs():
                col = metric_column(j.name, s.name)
                declared[col] = s.model_copy(update={"name": col})
        return {c: declared.get(c) or as_metric_spec(c) for c in metric_columns(self._table)}

    def metric_columns(self, roles: tuple[str, ...] | None = None) -> list[str]:
        """The metric columns, optionally only those whose role is in ``roles``."""
        return [c for c, s in self.metric_specs().items() if roles is None or s.role in roles]

    # -- images -------------------------------------------------------------------------------
    def image_path(self, digest: str) -> Path:
        return self.root / "images" / f"{digest}.png"

    def images(self, session_id: str) -> list[Path | None]:
        """A session's images in order: the source, then each turn's output (None where the turn has none).
        KeyError names the session when the run does not have it."""
        rows = self._table[self._table["session_id"].astype(str) == str(session_id)].sort_values("turn")
        if rows.empty:
            raise KeyError(f"{self.root}: no session {session_id!r}")
        source = str(rows.iloc[0].get("input_hash") or "")
        out: list[Path | None] = [self.image_path(source) if source else None]
        out += [self.image_path(h) if isinstance(h, str) and h else None for h in rows["output_hash"]]
        return out

    # -- summaries ----------------------------------------------------------------------------
    def status_counts(self) -> dict[str, int]:
        """Turns per edit status (ok, error, skipped, pending)."""
        return {str(k): int(v) for k, v in self._table["status"].value_counts().sort_index().items()}

    @property
    def failed_turns(self) -> int:
        """Turns that did not end ``ok`` (error, skipped, or still pending)."""
        return sum(n for status, n in self.status_counts().items() if status != "ok")

    def summary(self, **kw: Any) -> pd.DataFrame:
        """Mean, 95% CI and coverage per metric, overall and per turn index (see
        :func:`micebench.results.summary.summarize`, which takes the same keywords)."""
        from micebench.results.summary import summarize

        return summarize([self], **kw)


def open_run(path: str | Path | Run) -> Run:
    """Open a run directory (a :class:`Run` is returned as is); ResultsError says what is wrong."""
    if isinstance(path, Run):
        return path
    root = Path(path)
    if not root.is_dir():
        raise ResultsError(f"{root}: not a run directory (no such folder)")
    return Run(root, RunManifest.read(root / MANIFEST))
