"""A SQLite cache of finished votes, so an interrupted scoring run resumes without paying twice.

Key: (profile id, metric, prompt hash, image hashes, instruction text, vote index), hashed.
Only votes that produced a score are stored: a failed vote is retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def vote_key(profile: str, metric: str, prompt_hash: str, images: list[str], instruction: str, vote: int) -> str:
    blob = json.dumps(
        {"p": profile, "m": metric, "h": prompt_hash, "i": images, "t": instruction, "v": vote}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class VoteCache:
    """Thread-safe key -> {score, reason, raw} store in one SQLite file (table ``votes``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS votes (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM votes WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, score: float, reason: str, raw: str) -> None:
        value = json.dumps({"score": score, "reason": reason, "raw": raw})
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO votes (key, value) VALUES (?, ?)", (key, value))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
