"""--isolate: the editor runs in a child process that is killed on timeout (or found dead) and
restarted, so a hung editor is really stopped and never called twice at once."""

from __future__ import annotations

import json
import os

import pandas as pd
from click.testing import CliRunner
from loud_fixtures import run, small_photos

from micebench.cli import main


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_isolated_editor_is_killed_on_timeout_and_restarted(tmp_path):
    suite = small_photos(tmp_path)
    pids = tmp_path / "pids"
    faults = {"astronaut-cm#2": "pidhang", "chelsea-cu#1": "die", "coffee-cm#1": "raise"}
    res = run(suite, tmp_path / "runs", options={"faults": faults, "pid_file": str(pids), "hang_seconds": 120},
              judges=(), batch_size=1, turn_timeout=4, isolate=True)  # fmt: skip
    df = pd.read_parquet(res.run_dir / "turns.parquet").set_index(["session_id", "turn"])
    hung = df.loc[("astronaut-cm", 2)]
    assert hung.status == "error" and "timeout" in hung.error and "was killed" in hung.error
    (pid,) = [int(p) for p in pids.read_text().split()]
    assert pid != os.getpid() and _dead(pid)  # really stopped, not abandoned in a thread
    assert "process died (exit code 7)" in df.loc[("chelsea-cu", 1)].error
    assert "editor raised RuntimeError: boom on coffee-cm" in df.loc[("coffee-cm", 1)].error
    assert (df.loc["rocket-cu"].status == "ok").all()  # edited by the children started after each failure
    assert df.loc[("astronaut-cm", 1)].status == "ok" and df.loc[("astronaut-cm", 3)].status == "skipped"
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["isolate"] is True and m["editor"]["describe"]["config"]["faults"] == faults


def test_isolated_editor_setup_failure_is_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--limit", "1", "--model", "faulty_editors:BrokenEditor",
                                  "--isolate", "--out", str(tmp_path), "-q"])  # fmt: skip
    assert r.exit_code == 2 and "RuntimeError: broken init" in r.output, r.output
    assert not any(tmp_path.iterdir())


def test_help_documents_isolation():
    r = CliRunner().invoke(main, ["run", "--help"])
    assert "--isolate" in r.output and "killed" in r.output
