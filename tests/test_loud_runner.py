"""Runner faults: sys.exit in adapters, unstorable extras, close() raising, non-finite scores, judge
timeouts, and judges that are broken (not the turns): exit 2 after the edit results are stored."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from click.testing import CliRunner
from loud_fixtures import run, small_photos

from micebench.cli import main
from micebench.errors import SetupError
from micebench.evaluate import resume_run
from micebench.runner import SAME_FAILURE_LIMIT, JudgeFailed
from micebench.store import RunStore

FLAKY = "faulty_judges:FlakyJudge"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return small_photos(tmp_path_factory.mktemp("photos"))  # 4 sessions x 3 turns


def _table(res) -> pd.DataFrame:
    return pd.read_parquet(res.run_dir / "turns.parquet").set_index(["session_id", "turn"])


def test_sys_exit_in_the_editor_is_an_error_row_not_the_end_of_the_run(suite, tmp_path):
    res = run(suite, tmp_path, options={"faults": {"chelsea-cu#2": "exit"}}, batch_size=2)
    df = _table(res)
    assert "SystemExit(0)" in df.loc[("chelsea-cu", 2)].error and df.loc[("chelsea-cu", 3)].status == "skipped"
    assert (df.status == "ok").sum() == 10 and res.edit.pending == 0 and res.failed_turns == 2
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--limit", "1", "--model", "faulty_editors:FaultyEditor",
                                  "-M", "faults={'astronaut-cm#1': exit}", "--no-judge", "--out", str(tmp_path / "c"),
                                  "-q"])  # fmt: skip
    assert r.exit_code == 1 and "error 1" in r.output and "skipped 2" in r.output, r.output


def test_sys_exit_in_a_judge_leaves_that_turn_unscored(suite, tmp_path):
    res = run(suite, tmp_path, judges=[(FLAKY, {"exit_sessions": ["coffee-cm"]})])
    df = _table(res)
    col = [c for c in df.columns if c.endswith("brightness_status")][0]
    coffee = df.loc["coffee-cm"]
    assert (coffee[col] == "unscored").all() and coffee[col.replace("_status", "_reason")].str.contains(
        "SystemExit").all()
    assert (df.drop(index="coffee-cm")[col] == "ok").all()


def test_an_extra_json_cannot_hold_is_an_error_row(suite, tmp_path):
    res = run(suite, tmp_path, options={"faults": {"rocket-cu#1": "badextra"}}, judges=())
    bad = _table(res).loc[("rocket-cu", 1)]
    assert bad.status == "error" and "extra that cannot be stored as JSON" in bad.error and "Circular" in bad.error


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_close_raising_does_not_skip_the_judge_phase(suite, tmp_path, capsys, how):
    res = run(suite, tmp_path, editor="faulty_editors:BrokenEditor", options={"where": "close", "how": how})
    df = _table(res)
    assert (df.status == "ok").all() and (df.pixel_l1_src_status == "ok").all()
    assert json.loads((res.run_dir / "manifest.json").read_text())["finished"]
    assert "close() raised" in capsys.readouterr().err


def test_non_finite_scores_are_unscored_with_the_reason(suite, tmp_path):
    res = run(suite, tmp_path, judges=[(FLAKY, {"nan_sessions": ["astronaut-cm"], "inf_sessions": ["rocket-cu"]})])
    df = _table(res)
    col = [c for c in df.columns if c.endswith("brightness")][0]
    for sid, text in (("astronaut-cm", "(nan)"), ("rocket-cu", "(-inf)")):
        rows = df.loc[sid]
        assert (rows[f"{col}_status"] == "unscored").all() and rows[col].isna().all()
        assert rows[f"{col}_reason"].str.contains(f"non-finite score {text}", regex=False).all()
    assert (df.loc["coffee-cm", f"{col}_status"] == "ok").all()


def test_a_hung_judge_call_times_out_and_the_run_goes_on(suite, tmp_path):
    started = time.perf_counter()
    res = run(suite, tmp_path, judges=[(FLAKY, {"hang_sessions": ["chelsea-cu"], "hang_seconds": 30})],
              batch_size=1, judge_timeout=0.3)
    assert time.perf_counter() - started < 20
    df = _table(res)
    col = [c for c in df.columns if c.endswith("brightness_status")][0]
    assert (df.loc["chelsea-cu", col] == "unscored").all()
    assert df.loc["chelsea-cu", col.replace("_status", "_reason")].str.contains("timeout: judge .* 0.3 s").all()
    assert (df.drop(index="chelsea-cu")[col] == "ok").all()


@pytest.mark.parametrize("kind, batch_size", [("ImportError", 4), ("ValueError", 4), ("ValueError", 1)])
def test_a_broken_judge_stops_the_run_after_the_edits_are_stored(suite, tmp_path, monkeypatch, kind, batch_size):
    monkeypatch.setenv("FLAKY_BROKEN", "1")
    judges = [("pixel", {}), (FLAKY, {"broken_env": "FLAKY_BROKEN", "broken_kind": kind})]
    with pytest.raises(JudgeFailed) as e:
        run(suite, tmp_path, judges=judges, batch_size=batch_size)
    assert isinstance(e.value, SetupError)
    msg = str(e.value)
    assert f"{kind}: judge backend unavailable" in msg and "edit results are stored" in msg and "--resume" in msg
    run_dir = tmp_path / "r"
    store = RunStore.open(run_dir)
    assert len(store.turn_records()) == 12  # every edit is safe
    rows = store.judgement_rows()
    assert {r[3] for r in rows} == {"pixel"}  # the broken judge wrote nothing: a resume redoes it all
    store.close()
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["finished"] is None and (run_dir / "turns.parquet").exists()
    monkeypatch.delenv("FLAKY_BROKEN")
    res = resume_run(run_dir, progress=False)
    df = _table(res)
    col = [c for c in df.columns if c.endswith("brightness_status")][0]
    assert (df[col] == "ok").all() and res.edit.done == 12


def test_the_same_failure_on_fewer_turns_than_the_limit_is_per_turn(suite, tmp_path):
    sessions = ["astronaut-cm", "chelsea-cu"]  # 6 turns fail the same way, fewer than the limit
    assert 6 < SAME_FAILURE_LIMIT
    res = run(suite, tmp_path, judges=[(FLAKY, {"fail_sessions": sessions})], batch_size=1)
    df = _table(res)
    col = [c for c in df.columns if c.endswith("brightness_status")][0]
    assert (df.loc[sessions, col] == "unscored").all() and (df.drop(index=sessions)[col] == "ok").all()


def test_broken_judge_exits_2_on_the_console(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAKY_BROKEN", "1")
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--limit", "2", "--model", "identity", "--judge", FLAKY,
                                  "-J", "broken_env=FLAKY_BROKEN", "--out", str(tmp_path), "--run-name", "b", "-q"])
    assert r.exit_code == 2 and "cannot score: ImportError: judge backend unavailable" in r.output, r.output
    assert len(RunStore.open(tmp_path / "b").turn_records()) == 6
