"""Reading (and copying between) run directories, for merge and export.

This is the one place where the scale-out tools touch a run directory's files and its SQLite
record; everything else goes through :class:`RunDir`. Tables come from the Run API
(:func:`micebench.results.run.open_run`); merge also needs what only the record holds (the
sessions, every turn and judgement row), read here through :class:`~micebench.store.RunStore`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micebench.spec import Session
from micebench.store import DB, MANIFEST, RunStore, RunStoreError, TurnRecord


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / MANIFEST).is_file() and (p / DB).is_file()


@dataclass
class RunDir:
    """A finished or unfinished run directory, read-only."""

    root: Path
    manifest: dict[str, Any]
    sessions: list[Session]
    records: dict[tuple[str, int], TurnRecord]
    _store: RunStore = field(repr=False)

    @property
    def total_turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    def image_path(self, digest: str) -> Path:
        return self._store.image_path(digest)

    def image_files(self) -> list[Path]:
        d = self._store.images_dir
        return sorted(d.glob("*.png")) if d.is_dir() else []

    def judged_keys(self) -> set[str]:
        rows = self._store.conn.execute("SELECT DISTINCT judge_key FROM judgements").fetchall()
        return {r[0] for r in rows}

    def turn_table(self):
        """The per-turn table as the Run API gives it (with run_id, editor and image path columns)."""
        from micebench.results.run import open_run as open_results

        return open_results(self.root).turns()

    def close(self) -> None:
        self._store.close()


def open_run(path: str | Path) -> RunDir:
    """Open a run directory for reading; :class:`RunStoreError` says why not."""
    store = RunStore.open(path)
    try:
        return RunDir(Path(path), store.read_manifest(), store.sessions(), store.turn_records(), store)
    except (sqlite3.DatabaseError, ValueError) as e:
        store.close()
        raise RunStoreError(f"{path}: the run record cannot be read ({e})") from e


def create_run(root: str | Path, manifest: dict[str, Any], sessions: Iterable[Session]) -> RunStore:
    return RunStore.create(root, manifest, sessions)


def copy_records(target: RunStore, sources: list[RunDir]) -> None:
    """Copy every turn row and judgement row of ``sources`` into ``target``, column for column
    (the sources were written by the same micebench, so the tables agree)."""
    for src in sources:
        # One source at a time: SQLite attaches at most 10 databases, and refuses ATTACH in a transaction.
        target.conn.execute("ATTACH DATABASE ? AS src", (str(src.root / DB),))
        try:
            with target.transaction() as c:
                for table in ("turns", "judgements"):
                    cols = [r[1] for r in c.execute(f"PRAGMA src.table_info({table})")]
                    have = {r[1] for r in c.execute(f"PRAGMA main.table_info({table})")}
                    if not cols or not set(cols) <= have:
                        raise RunStoreError(f"{src.root}: its {table} table has columns {cols}, this micebench "
                                            f"knows {sorted(have)}; merge with the micebench that made it")
                    names = ", ".join(cols)
                    c.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM src.{table}")
        finally:
            target.conn.execute("DETACH DATABASE src")


def link_images(target: RunStore, sources: list[RunDir]) -> int:
    """Hard-link (or copy, across file systems) every stored image of ``sources`` into ``target``."""
    n = 0
    target.images_dir.mkdir(exist_ok=True)
    for src in sources:
        for f in src.image_files():
            dest = target.images_dir / f.name
            if dest.exists():
                continue
            try:
                os.link(f, dest)
            except OSError:
                shutil.copy2(f, dest)
            n += 1
    return n


def export_table(target: RunStore):
    from micebench.results.turn_table import export_turn_table

    return export_turn_table(target)
