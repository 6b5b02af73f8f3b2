"""A small thread-safe key -> JSON store in one SQLite file (WAL), for request and vote caches."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_OPEN_LOCK = threading.Lock()


class SqliteJsonStore:
    """``get(key) -> dict | None`` and ``put(key, dict)`` in table ``table`` of ``path``."""

    def __init__(self, path: str | Path, table: str) -> None:
        if not re.fullmatch(r"[a-z_]+", table):
            raise ValueError(f"table name {table!r}: lowercase letters and _ only")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._table = table
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        # Two stores on one file (replies and votes share a cache file) may be opened at once by
        # different threads; switching to WAL needs a moment alone with the file, which SQLite's busy
        # timeout does not always wait for, so opening is serialised here and retried briefly.
        with _OPEN_LOCK, self._lock:
            for attempt in range(50):
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 49:
                        raise
                    time.sleep(0.1)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT value FROM {self._table} WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO {self._table} (key, value) VALUES (?, ?)",
                             (key, json.dumps(value)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
