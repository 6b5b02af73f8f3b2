"""The run directory: manifest, SQLite record, content-addressed images, table exports.

``runs/<run_id>/``
    ``manifest.json``  what ran: versions, suite hash, editor and judge configs, seeds, command line
    ``run.sqlite``     the record of sessions, turns and judgements (WAL; one transaction per batch)
    ``images/``        every source and output image once, as ``<sha256 of its pixels>.png``
    ``turns.parquet``, ``turns.csv``  the per-turn table, exported from the record

Crash safety: an image file is written (atomically) before the row that refers to it is
committed, and a batch's rows are committed together, so a kill at any moment loses at most
the batch in flight and never leaves a row pointing at a missing image.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from micebench.images import image_hash, png_bytes
from micebench.spec import Judgement, Session

MANIFEST = "manifest.json"
DB = "run.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    idx INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    input_hash TEXT,
    output_hash TEXT,
    effective_instruction TEXT,
    extra TEXT,
    seconds REAL,
    PRIMARY KEY (session_id, turn)
);
CREATE TABLE IF NOT EXISTS judgements (
    session_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    judge_key TEXT NOT NULL,
    judge_name TEXT NOT NULL,
    metric TEXT NOT NULL,
    score REAL,
    status TEXT NOT NULL,
    votes TEXT,
    reason TEXT,
    raw TEXT,
    model TEXT,
    revision TEXT,
    prompt_hash TEXT,
    PRIMARY KEY (session_id, turn, judge_key, metric)
);
"""


class RunStoreError(RuntimeError):
    """A run directory that is missing, incomplete, or does not match what was asked."""


@dataclass(frozen=True)
class TurnRecord:
    session_id: str
    turn: int  # 0-based
    status: str
    error: str | None = None
    input_hash: str | None = None
    output_hash: str | None = None
    effective_instruction: str | None = None
    extra: dict[str, Any] | None = None
    seconds: float | None = None


class RunStore:
    """Read and write one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.images_dir = self.root / "images"
        self._conn: sqlite3.Connection | None = None

    # -- creation and opening -------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, manifest: dict[str, Any], sessions: Iterable[Session]) -> RunStore:
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise RunStoreError(f"{root} already exists and is not empty; use --resume to continue it")
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root)
        store.images_dir.mkdir(exist_ok=True)
        with store.transaction() as c:
            c.executemany(
                "INSERT INTO sessions (idx, id, json) VALUES (?, ?, ?)",
                ((i, s.id, s.model_dump_json()) for i, s in enumerate(sessions)),
            )
        store.write_manifest(manifest)
        return store

    @classmethod
    def open(cls, root: str | Path) -> RunStore:
        root = Path(root)
        if not (root / MANIFEST).is_file() or not (root / DB).is_file():
            raise RunStoreError(f"{root} is not a micebench run directory (no {MANIFEST} or {DB})")
        return cls(root)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.root / DB, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    # -- manifest -------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        return json.loads((self.root / MANIFEST).read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _atomic_write(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        m = self.read_manifest()
        m.update(changes)
        self.write_manifest(m)
        return m

    # -- images ---------------------------------------------------------------
    def put_image(self, img: Image.Image) -> str:
        digest = image_hash(img)
        path = self.images_dir / f"{digest}.png"
        if not path.is_file() or path.stat().st_size == 0:
            _atomic_write(path, png_bytes(img))
        return digest

    def image_path(self, digest: str) -> Path:
        return self.images_dir / f"{digest}.png"

    def get_image(self, digest: str) -> Image.Image:
        path = self.image_path(digest)
        if not path.is_file():
            raise RunStoreError(f"{self.root}: image {digest} is referenced but missing from images/")
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
            raise RunStoreError(f"{self.root}: stored image {digest} cannot be read ({e}); "
                                f"`micebench run --resume` redoes the turns that made it") from e

    # -- sessions and turns ----------------------------------------------------
    def sessions(self) -> list[Session]:
        rows = self.conn.execute("SELECT json FROM sessions ORDER BY idx").fetchall()
        return [Session.model_validate_json(r[0]) for r in rows]

    def turn_records(self) -> dict[tuple[str, int], TurnRecord]:
        rows = self.conn.execute(
            "SELECT session_id, turn, status, error, input_hash, output_hash, effective_instruction, extra, seconds"
            " FROM turns"
        ).fetchall()
        out = {}
        for r in rows:
            out[(r[0], r[1])] = TurnRecord(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]) if r[7] else None, r[8]
            )
        return out

    def write_turns(self, records: list[TurnRecord]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.session_id,
                        r.turn,
                        r.status,
                        r.error,
                        r.input_hash,
                        r.output_hash,
                        r.effective_instruction,
                        json.dumps(r.extra, default=str) if r.extra else None,
                        r.seconds,
                    )
                    for r in records
                ],
            )

    def repair(self) -> list[tuple[str, int]]:
        """Forget turns whose output image is missing or empty (e.g. a power cut between the image
        write and the disk flush) together with their session's later turns, so a resume redoes
        them. Returns the (session_id, turn) pairs forgotten."""
        broken: dict[str, int] = {}
        for (sid, turn), r in self.turn_records().items():
            if r.status != "ok":
                continue
            p = self.image_path(r.output_hash or "")
            if not p.is_file() or p.stat().st_size == 0:
                broken[sid] = min(turn, broken.get(sid, turn))
        dropped = []
        with self.transaction() as c:
            for sid, turn in broken.items():
                rows = c.execute("SELECT turn FROM turns WHERE session_id = ? AND turn >= ?", (sid, turn)).fetchall()
                dropped += [(sid, r[0]) for r in rows]
                c.execute("DELETE FROM turns WHERE session_id = ? AND turn >= ?", (sid, turn))
                c.execute("DELETE FROM judgements WHERE session_id = ? AND turn >= ?", (sid, turn))
        return dropped

    # -- judgements -------------------------------------------------------------
    def judged_turns(self, judge_key: str) -> set[tuple[str, int]]:
        rows = self.conn.execute(
            "SELECT DISTINCT session_id, turn FROM judgements WHERE judge_key = ?", (judge_key,)
        ).fetchall()
        return {(r[0], r[1]) for r in rows}

    def write_judgements(self, judge_key: str, judge_name: str, items: list[tuple[str, int, Judgement]]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO judgements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        sid,
                        turn,
                        judge_key,
                        judge_name,
                        j.metric,
                        j.score,
                        j.status.value,
                        json.dumps(list(j.votes)),
                        j.reason,
                        j.raw,
                        j.model,
                        j.revision,
                        j.prompt_hash,
                    )
                    for sid, turn, j in items
                ],
            )

    def judgement_rows(self) -> list[tuple]:
        return self.conn.execute(
            "SELECT session_id, turn, judge_key, judge_name, metric, score, status, votes, reason FROM judgements"
        ).fetchall()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_turn_table(run_dir: str | Path):
    """The per-turn table of a run as a pandas DataFrame; kept for older callers, prefer
    ``micebench.open_run(run_dir).turns()``."""
    from micebench.results.run import open_run

    return open_run(run_dir).turns()
