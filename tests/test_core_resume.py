"""Kill -9 a real run part way, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from micebench.store import RunStore

ARGS = ["run", "--suite", "photos", "--model", "faulty_editors:FaultyEditor", "-M", "delay=0.15",
        "-M", "faults={'rocket-cu#2': error}", "--judge", "pixel", "--batch-size", "1", "-q"]


def _env():
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _comparable(run_dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "turns.parquet")
    return df.drop(columns=["seconds"]).sort_values(["session_id", "turn"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    proc = subprocess.run([sys.executable, "-m", "micebench.cli", *ARGS, "--out", str(out), "--run-name", "full"],
                          env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr  # one turn fails on purpose, its successor is skipped
    return _comparable(out / "full")


@pytest.mark.slow
@pytest.mark.parametrize("phase, table, at", [("edit", "turns", 4), ("judge", "judgements", 16)])
def test_kill_and_resume_equals_uninterrupted(tmp_path, reference, phase, table, at):
    run_dir = tmp_path / "k"
    proc = subprocess.Popen([sys.executable, "-m", "micebench.cli", *ARGS, "--out", str(tmp_path), "--run-name", "k"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _count(run_dir / "run.sqlite", table) < at:
        assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "run made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = RunStore.open(run_dir).turn_records()
    assert before
    if phase == "edit":
        assert not (run_dir / "turns.parquet").exists()
    done_judgements = _count(run_dir / "run.sqlite", "judgements")

    res = subprocess.run([sys.executable, "-m", "micebench.cli", "run", "--resume", str(run_dir), "-q"],
                         env=_env(), capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    after = RunStore.open(run_dir).turn_records()
    # nothing finished before the kill was recomputed (its recorded seconds are unchanged)
    assert all(after[k] == v for k, v in before.items())
    assert _count(run_dir / "run.sqlite", "judgements") >= done_judgements
    got = _comparable(run_dir)
    pd.testing.assert_frame_equal(got, reference)
    assert len(got) == 12 and got.duplicated(["session_id", "turn"]).sum() == 0
