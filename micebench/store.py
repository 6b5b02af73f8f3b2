"""The run directory: manifest, SQLite record, content-addressed images, table exports.

``runs/<run_id>/``
    ``manifest.json``  what ran: versions, suite hash, editor and judge configs, seeds, command line
    ``run.sqlite``     the record of sessions, turns and judgements (WAL; one transaction per batch)
    ``images/``        every source and output image once, as ``<sha256 of its pixels>.png``
    ``turns.parquet``, ``turns.csv``  the per-turn table, exported from the record

Crash safety: an image file is written (atomically) before the row that refers to it is
committed, and a batch's rows are committed together, so a kill at any moment loses at most
the batch in flight and never leaves a row pointing at a missing image. A run directory is built
under a hidden temporary name and renamed into place once its record and manifest exist, so a kill
during creation leaves no half-made directory under the run's name.

One writer at a time: a writer (a run, a resume, a score) holds an exclusive lock on ``.lock``
in the run directory, which names its pid, host and command for whoever is refused. Files are
created with the permissions the umask allows (not 0600), so a report can be served to others.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
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
LOCK = ".lock"
_CREATING = ".creating-"

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
    """A run directory that is missing, incomplete, not writable, or does not match what was asked."""


class RunLockedError(RunStoreError):
    """Another process is writing this run directory."""


_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0o666 less the process umask."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # no /proc: read the umask by setting it (and put it straight back)
        old = os.umask(0o022)
        os.umask(old)
    return 0o666 & ~old


def dir_mode() -> int:
    return file_mode() | ((file_mode() & 0o444) >> 2)  # the x bits wherever r is allowed


def _cannot_write(where: Path, e: OSError, hint: str) -> RunStoreError:
    return RunStoreError(f"cannot write to {where} ({e.strerror or e}); {hint}")


class RunLock:
    """An exclusive advisory lock (``flock``) on a run directory's ``.lock`` file.

    The kernel drops it when the holder dies (even by kill -9), so a stale file never blocks. The
    file holds the holder's pid, host, command and start time, for the message of whoever is
    refused. On systems without ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, command: str = "") -> None:
        path = self.root / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as e:
            raise _cannot_write(self.root, e, "a run directory must be writable to run, resume or score it") from e
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            self._fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a file system without locks
                sys.stderr.write(f"warning: {self.root}: the file system cannot lock ({e.strerror}); "
                                 "make sure no other process writes this run directory\n")
                self._fd = fd
                return
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunStoreError(f"{self.root}: cannot lock {LOCK} ({e.strerror})") from e
            raise RunLockedError(f"{self.root} is in use by {holder}; wait for it to finish (one writer at a time)"
                                 ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": command or " ".join(sys.argv)}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # a read-only file system after the fact: the lock still goes with the close
        os.close(fd)  # closing the only descriptor drops the flock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process (it left no details)"
    return (f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')} "
            f"({info.get('command', '?')})")


def _lock_is_free(root: Path) -> bool:
    lock = RunLock(root)
    try:
        lock.acquire("micebench: checking an abandoned directory")
    except RunStoreError:
        return False
    lock.release()
    return True


def _abandoned_creation(root: Path) -> bool:
    """A directory an older micebench left half-made: a record but no manifest, no images, no writer."""
    if (root / MANIFEST).exists() or not (root / DB).exists():
        return False
    allowed = {DB, f"{DB}-wal", f"{DB}-shm", f"{DB}-journal", "images", LOCK}
    names = {p.name for p in root.iterdir()}
    images = root / "images"
    return names <= allowed and (not images.is_dir() or not any(images.iterdir())) and _lock_is_free(root)


def _publish(tmp: Path, root: Path) -> None:
    """Move a finished temporary directory to its run name; refuses if someone else got there first."""
    try:
        os.rename(tmp, root)  # atomic; replaces only an empty directory
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise RunStoreError(f"{root} was created by another process meanwhile; pick another --run-name "
                                "or `micebench run --resume` it") from e
        raise


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
        self._lock: RunLock | None = None

    # -- creation and opening -------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, manifest: dict[str, Any], sessions: Iterable[Session],
               command: str = "") -> RunStore:
        """Build a new run directory atomically and return it open and locked for writing.

        The record and manifest are written under a hidden name beside ``root`` and renamed into
        place, so ``root`` either does not exist or is complete. A directory left half-made by an
        older version (a record but no manifest, nothing edited) is replaced.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RunStoreError(f"{root} exists and is not a directory")
        if root.is_dir() and any(root.iterdir()):
            if not _abandoned_creation(root):
                raise RunStoreError(f"{root} already exists and is not empty; use --resume to continue it")
            shutil.rmtree(root)
        parent = root.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f"{_CREATING}{root.name[:80]}-"))
        except OSError as e:
            raise _cannot_write(parent, e, "choose another --out") from e
        lock = RunLock(tmp)
        try:
            os.chmod(tmp, dir_mode())  # mkdtemp makes 0700
            lock.acquire(command)
            store = cls(tmp)
            store.images_dir.mkdir(exist_ok=True)
            with store.transaction() as c:
                c.executemany(
                    "INSERT INTO sessions (idx, id, json) VALUES (?, ?, ?)",
                    ((i, s.id, s.model_dump_json()) for i, s in enumerate(sessions)),
                )
            store.write_manifest(manifest)
            store.close()  # the last connection checkpoints the WAL and removes it before the move
            _publish(tmp, root)
        except BaseException:
            lock.release()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _sweep_abandoned(parent)
        lock.root = root
        store = cls(root)
        store._lock = lock
        return store

    @classmethod
    def open(cls, root: str | Path, write: bool = False, command: str = "") -> RunStore:
        """Open a run directory; ``write=True`` takes its lock (refused while another writer holds it)."""
        root = Path(root)
        if not (root / MANIFEST).is_file() or not (root / DB).is_file():
            if root.is_dir() and (root / DB).is_file() and not (root / MANIFEST).exists():
                raise RunStoreError(f"{root} was interrupted while being created (no {MANIFEST}); nothing was "
                                    "edited in it: start the run again with the same --run-name")
            raise RunStoreError(f"{root} is not a micebench run directory (no {MANIFEST} or {DB})")
        store = cls(root)
        if write:
            lock = RunLock(root)
            lock.acquire(command)
            store._lock = lock
            for name in (DB, MANIFEST):
                if not os.access(root / name, os.W_OK):
                    store.close()
                    raise RunStoreError(f"cannot write to {root / name} (read-only); a run directory must be "
                                        "writable to resume or score it")
        return store

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.root / DB, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        return self._conn

    def close(self) -> None:
        """Close the record and release the writer's lock (if this store holds it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:  # read-only, disk full, locked past the timeout
            raise RunStoreError(f"{self.root}: cannot write the run record {DB} ({e})") from e
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        try:
            c.execute("COMMIT")
        except sqlite3.OperationalError as e:
            raise RunStoreError(f"{self.root}: cannot write the run record {DB} ({e})") from e

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
            try:
                _atomic_write(path, png_bytes(img))
            except OSError as e:
                raise _cannot_write(self.images_dir, e, "the image could not be stored") from e
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

    def image_problem(self, digest: str) -> str | None:
        """Why a stored image is unusable (missing, empty, truncated, not the pixels its name says),
        or None when it decodes to exactly the pixels its hash names."""
        from micebench.images import image_hash

        p = self.image_path(digest)
        if not digest or not p.is_file():
            return "missing"
        if p.stat().st_size == 0:
            return "empty"
        try:
            with Image.open(p) as im:
                im.load()
                if image_hash(im) == digest or image_hash(im.convert("RGB")) == digest:
                    return None
        except (OSError, SyntaxError, ValueError) as e:  # truncated or not an image at all
            return f"unreadable ({e})"
        return "its pixels do not match its name"

    def repair(self) -> list[tuple[str, int]]:
        """Forget turns whose stored image is missing, empty, truncated or altered (e.g. a power cut
        between the image write and the disk flush) together with their session's later turns, so
        a resume redoes them; a damaged source image takes its whole session. Damaged files are
        deleted so they are written again. Every image is decoded and hashed (in a few threads).
        Returns the (session_id, turn) pairs forgotten."""
        from concurrent.futures import ThreadPoolExecutor

        records = self.turn_records()
        needed: dict[str, list[tuple[str, int]]] = {}
        for (sid, turn), r in records.items():
            if r.status == "ok":
                needed.setdefault(r.output_hash or "", []).append((sid, turn))
            if turn == 0 and r.input_hash:
                needed.setdefault(r.input_hash, []).append((sid, 0))
        digests = list(needed)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            problems = dict(zip(digests, pool.map(self.image_problem, digests), strict=True))
        broken: dict[str, int] = {}
        for digest, problem in problems.items():
            if problem is None:
                continue
            if digest:
                self.image_path(digest).unlink(missing_ok=True)
            for sid, turn in needed[digest]:
                broken[sid] = min(turn, broken.get(sid, turn))
        dropped = []
        with self.transaction() as c:
            for sid, turn in broken.items():
                rows = c.execute("SELECT turn FROM turns WHERE session_id = ? AND turn >= ?", (sid, turn)).fetchall()
                dropped += [(sid, r[0]) for r in rows]
                c.execute("DELETE FROM turns WHERE session_id = ? AND turn >= ?", (sid, turn))
                c.execute("DELETE FROM judgements WHERE session_id = ? AND turn >= ?", (sid, turn))
        return sorted(dropped)

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


def _sweep_abandoned(parent: Path, min_age_s: float = 600.0) -> None:
    """Remove temporary directories of creations that were killed: older than ``min_age_s`` (so one
    that is being set up right now is never touched) and with no process holding their lock."""
    now = time.time()
    for p in parent.glob(f"{_CREATING}*"):
        try:
            old = now - p.stat().st_mtime > min_age_s
        except OSError:
            continue
        if old and p.is_dir() and _lock_is_free(p):
            shutil.rmtree(p, ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, file_mode())  # mkstemp makes 0600; the file should be as readable as any other
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
