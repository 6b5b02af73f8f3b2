"""The Ray executor on a local two-CPU Ray instance (started once for this module): the same table as
the local executor; a worker killed mid-run and a driver killed mid-run lose nothing and change nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from micebench.errors import SetupError  # noqa: E402
from micebench.evaluate import resume_run, start_run  # noqa: E402
from micebench.executors import ExecutorSpec  # noqa: E402
from micebench.runner import RunSettings  # noqa: E402
from micebench.suites.resolve import load_suite  # noqa: E402

TESTS = Path(__file__).resolve().parent
RAY2 = ExecutorSpec("ray", workers=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray instance for the module; its workers can import the test editors."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), saved) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def synth():
    suite = load_suite("synth", {"n": 3}, seed=0)  # 6 sessions (3 cm + 3 cu), 3 to 10+ turns each
    assert len(suite.sessions) == 6
    return suite


def _table(run_dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "turns.parquet")
    return df.drop(columns=["seconds"]).sort_values(["session_id", "turn"]).reset_index(drop=True)


def _turns_done(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute("SELECT COUNT(*) FROM turns").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth):
    """The local executor's table for the pid editor + scene judge."""
    out = tmp_path_factory.mktemp("local")
    res = start_run(synth, "scale_editors:PidEditor", {"pid_dir": str(out / "pids"), "delay": 0.0},
                    [("scene", {})], out=out, run_name="local", settings=RunSettings(progress=False, batch_size=2))
    return _table(res.run_dir)


def test_ray_table_equals_local_row_for_row(cluster, synth, tmp_path):
    """A probe editor and the scene judge: the Ray executor's table is the local executor's."""
    local = start_run(synth, "synth-context", {}, [("scene", {})], out=tmp_path, run_name="local",
                      settings=RunSettings(progress=False, batch_size=2))
    remote = start_run(synth, "synth-context", {}, [("scene", {})], out=tmp_path, run_name="ray",
                       settings=RunSettings(progress=False, batch_size=2), executor=RAY2)
    a, b = _table(local.run_dir), _table(remote.run_dir)
    assert (a.status == "ok").all() and a.scene_if.notna().all()
    pd.testing.assert_frame_equal(a, b)
    import json

    m = json.loads((remote.run_dir / "manifest.json").read_text())
    assert m["executor"]["name"] == "ray" and m["executor"]["workers"] == 2 and m["executor"]["ray_version"]
    assert json.loads((local.run_dir / "manifest.json").read_text())["executor"]["name"] == "local"


def test_errors_and_skips_read_the_same_under_ray(cluster, tmp_path):
    """An editor that raises on one turn: the same error text (exception type and message) and skips."""
    suite = load_suite("synth", {"n": 2}, seed=1)
    sid = suite.sessions[1].id
    opts = {"faults": {f"{sid}#2": "raise", f"{suite.sessions[2].id}#1": "error"}}
    runs = [start_run(suite, "faulty_editors:FaultyEditor", opts, [], out=tmp_path, run_name=name,
                      settings=RunSettings(progress=False, batch_size=1), executor=ex)
            for name, ex in (("local", None), ("ray", RAY2))]
    a, b = (_table(r.run_dir) for r in runs)
    assert (a.status == "error").sum() == 2 and (a.status == "skipped").sum() > 0
    assert a.loc[(a.session_id == sid) & (a.turn == 2), "error"].item() == f"editor raised RuntimeError: boom on {sid}"
    pd.testing.assert_frame_equal(a, b)


def test_worker_killed_mid_run_is_restarted_and_nothing_changes(cluster, synth, reference, tmp_path):
    pids = tmp_path / "pids"
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = start_run(synth, "scale_editors:PidEditor", {"pid_dir": str(pids), "delay": 0.25},
                                      [("scene", {})], out=tmp_path, run_name="r",
                                      settings=RunSettings(progress=False, batch_size=2), executor=RAY2)
        except BaseException as e:  # reported by the assertion below
            box["error"] = e

    th = threading.Thread(target=run)
    th.start()
    deadline = time.time() + 120
    while not (len(list(pids.glob("*.pid"))) == 2 and _turns_done(tmp_path / "r" / "run.sqlite") >= 4):
        assert th.is_alive() and time.time() < deadline, box.get("error", "no progress before the kill")
        time.sleep(0.02)
    before = {p.stem for p in pids.glob("*.pid")}
    victim = int(sorted(before)[0])
    os.kill(victim, signal.SIGKILL)
    th.join(180)
    assert not th.is_alive() and "error" not in box, box.get("error")
    after = {p.stem for p in pids.glob("*.pid")}
    assert len(after - before) == 1, "Ray should have started one replacement worker"
    assert box["result"].edit.done == len(reference) and box["result"].edit.errors == 0
    pd.testing.assert_frame_equal(_table(tmp_path / "r"), reference)


@pytest.mark.slow
def test_driver_killed_then_resumed_equals_uninterrupted(cluster, synth, reference, tmp_path):
    """A real `micebench run --executor ray` subprocess, SIGKILLed part way; --resume (on Ray again)."""
    args = [sys.executable, "-m", "micebench.cli", "run", "--suite", "synth", "-S", "n=3", "--seed", "0", "--model",
            "scale_editors:PidEditor", "-M", f"pid_dir={tmp_path / 'pids'}", "-M", "delay=0.25", "--judge", "scene",
            "--batch-size", "2", "--executor", "ray", "--workers", "2", "--ray-address", cluster, "-q",
            "--out", str(tmp_path), "--run-name", "k"]
    env = {**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"]}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _turns_done(tmp_path / "k" / "run.sqlite") < 6:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no progress before the kill"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _turns_done(tmp_path / "k" / "run.sqlite")
    assert 6 <= done < len(reference)
    res = subprocess.run([sys.executable, "-m", "micebench.cli", "run", "--resume", str(tmp_path / "k"), "-q"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    m = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert m["executor"]["name"] == "ray" and m["executor"]["address"] == cluster
    pd.testing.assert_frame_equal(_table(tmp_path / "k"), reference)


def test_setup_problems_stop_before_any_work(cluster, synth, tmp_path):
    with pytest.raises(SetupError, match="needs 4 GPUs, but the Ray cluster has 0"):
        start_run(synth, "identity", {}, [], out=tmp_path, run_name="gpu",
                  executor=ExecutorSpec("ray", workers=4, gpus_per_worker=1))
    assert not (tmp_path / "gpu").exists()
    # An editor that cannot be built on a worker: one line naming it and why, not a restart loop.
    with pytest.raises(SetupError, match="editor 'scale_editors:BrokenEditor' could not be built on a Ray worker: "
                                         "RuntimeError: no weights at /nowhere"):
        start_run(synth, "scale_editors:BrokenEditor", {}, [], out=tmp_path, run_name="broken",
                  settings=RunSettings(progress=False), executor=RAY2)
    # A cluster address that does not answer: one line, exit 2, in seconds, no run directory (a fresh process).
    started = time.time()
    res = subprocess.run([sys.executable, "-m", "micebench.cli", "run", "--suite", "synth", "-S", "n=1", "--model",
                          "identity", "--executor", "ray", "--ray-address", "127.0.0.1:9", "--out", str(tmp_path),
                          "--run-name", "addr"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--ray-address 127.0.0.1:9: nothing answers there" in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("== ")]
    assert len(errors) == 1 and time.time() - started < 30, res.stderr  # one line (beside the editor header)
    assert not (tmp_path / "addr").exists()


def test_resume_of_a_ray_run_can_finish_locally(cluster, synth, reference, tmp_path):
    """A Ray run resumed with --executor local (e.g. the cluster is gone): same table, both executors recorded."""
    first = start_run(synth, "scale_editors:PidEditor", {"pid_dir": str(tmp_path / "pids"), "delay": 0.0},
                      [("scene", {})], out=tmp_path, run_name="x", settings=RunSettings(progress=False, batch_size=2),
                      executor=RAY2)
    con = sqlite3.connect(first.run_dir / "run.sqlite")
    with con:
        con.execute("DELETE FROM turns WHERE turn >= 1")
        con.execute("DELETE FROM judgements")
    con.close()
    again = resume_run(first.run_dir, progress=False, executor=ExecutorSpec())
    assert again.edit.done == len(reference)
    pd.testing.assert_frame_equal(_table(first.run_dir), reference)
    import json

    m = json.loads((first.run_dir / "manifest.json").read_text())
    assert m["executor"]["name"] == "local" and m["previous_executors"][0]["name"] == "ray"
