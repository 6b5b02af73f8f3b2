"""The preflight: judges, then the editor, are built and checked before any work; failures anywhere
outside edit() are one line and exit 2 with no run directory; --dry-run does only this."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from micebench.cli import main
from micebench.store import RunStore

BROKEN_EDITOR = "faulty_editors:BrokenEditor"
BROKEN_JUDGE = "faulty_judges:BrokenJudge"


def _run(tmp_path, *args, model=BROKEN_EDITOR):
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--limit", "1", "--model", model, "--out", str(out),
                                  "-q", *args])  # fmt: skip
    return r, out


@pytest.mark.parametrize("where, how, expect", [
    ("init", "raise", "editor faulty_editors:BrokenEditor: building it: RuntimeError: broken init"),
    ("init", "exit", "building it: SystemExit(3): the adapter called sys.exit()"),
    ("preflight", "raise", "editor faulty_editors:BrokenEditor: RuntimeError: broken preflight"),
    ("describe", "raise", "describe(): RuntimeError: broken describe"),
    ("describe-unjson", "raise", "describe() returned something that cannot be stored as JSON"),
])  # fmt: skip
def test_editor_failures_outside_edit_are_one_line_exit_2(tmp_path, where, how, expect):
    r, out = _run(tmp_path, "-M", f"where={where}", "-M", f"how={how}", "--judge", "pixel")
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"error: {r.output.strip()[7:]}"] and expect in r.output, r.output
    assert not out.exists()


@pytest.mark.parametrize("where, how, expect", [
    ("init", "raise", "judge faulty_judges:BrokenJudge: building it: RuntimeError: broken init"),
    ("init", "exit", "building it: SystemExit(4)"),
    ("preflight", "setup", "judge faulty_judges:BrokenJudge: broken judge: its model is missing"),
    ("preflight", "exit", "judge faulty_judges:BrokenJudge: SystemExit(4)"),
])  # fmt: skip
def test_judge_failures_stop_the_run_before_the_editor_is_built(tmp_path, where, how, expect):
    marker = tmp_path / "built"
    r, out = _run(tmp_path, "-M", "where=nowhere", "-M", f"marker_file={marker}", "--judge", BROKEN_JUDGE,
                  "-J", f"where={where}", "-J", f"how={how}")  # fmt: skip
    assert r.exit_code == 2 and expect in r.output, r.output
    assert not out.exists() and not marker.exists()  # judges are checked first, in seconds


def test_the_editor_the_preflight_builds_is_the_one_that_edits(tmp_path):
    marker = tmp_path / "built"
    r, out = _run(tmp_path, "-M", "where=nowhere", "-M", f"marker_file={marker}", "--judge", "pixel")
    assert r.exit_code == 0, r.output
    assert len(marker.read_text().splitlines()) == 1


def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    marker = tmp_path / "built"
    r, out = _run(tmp_path, "-M", "where=nowhere", "-M", f"marker_file={marker}", "--judge", "pixel", "--dry-run",
                  "--run-name", "planned", "--batch-size", "3")  # fmt: skip
    assert r.exit_code == 0, r.output
    text = r.output
    assert "dry run: nothing was edited or written" in text and "judge pixel: ok" in text
    assert "editor faulty_editors:BrokenEditor: ok" in text and "photos (version 1): 1 sessions, 3 turns" in text
    assert f"would write {out}/planned (batch size 3" in text and "judge pixel: metrics l1_src" in text
    assert not out.exists() and len(marker.read_text().splitlines()) == 1
    r, out = _run(tmp_path, "--dry-run", "--judge", BROKEN_JUDGE, "-J", "where=preflight", model="identity")
    assert r.exit_code == 2 and "broken preflight" in r.output and not out.exists()


def test_score_checks_the_judge_before_touching_the_run(tmp_path):
    r, out = _run(tmp_path, "--no-judge", "--run-name", "x", model="identity")
    assert r.exit_code == 0, r.output
    before = (out / "x" / "manifest.json").read_bytes()
    r = CliRunner().invoke(main, ["score", str(out / "x"), "--judge", "clip", "-J", "device=cpu"])
    assert r.exit_code == 2 and "weights would be random" in r.output, r.output
    assert (out / "x" / "manifest.json").read_bytes() == before
    assert RunStore.open(out / "x").judgement_rows() == []
    assert json.loads(before)["judges"] == []


def test_edit_r2_without_weights_stops_before_editing(tmp_path):
    r, out = _run(tmp_path, "-M", f"weights={tmp_path / 'no-such-checkpoint'}", "--no-judge", model="edit-r2")
    assert r.exit_code == 2 and "editor edit-r2: weights" in r.output and "no such folder" in r.output
    assert not out.exists()  # not "error 3" rows in a run directory
