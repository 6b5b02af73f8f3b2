"""A SQLite cache of finished votes, so an interrupted scoring run resumes without paying twice.

Key: (profile id, metric, prompt hash, image hashes, instruction text, vote index), hashed.
Only votes that produced a score are stored: a failed vote is retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from micebench.kvstore import SqliteJsonStore


def vote_key(profile: str, metric: str, prompt_hash: str, images: list[str], instruction: str, vote: int) -> str:
    blob = json.dumps(
        {"p": profile, "m": metric, "h": prompt_hash, "i": images, "t": instruction, "v": vote}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class VoteCache(SqliteJsonStore):
    """Thread-safe key -> {score, reason, raw} store in one SQLite file (table ``votes``)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "votes")

    def put(self, key: str, score: float, reason: str, raw: str) -> None:  # type: ignore[override]
        super().put(key, {"score": score, "reason": reason, "raw": raw})
