"""The shipped leaderboards/synth.csv is current: a fresh run of a built-in editor passes the gate
against it (and a worse editor fails). Regenerate with leaderboards/regenerate.sh when this fails."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import ROOT

from micebench.cli import main

BOARD = ROOT / "leaderboards" / "synth.csv"


@pytest.mark.slow
def test_fresh_run_passes_the_gate_against_the_shipped_board(tmp_path):
    r = CliRunner().invoke(main, ["run", "--suite", "synth", "--model", "synth-lastturn", "--out", str(tmp_path),
                                  "--run-name", "lt", "-q"])
    assert r.exit_code == 0, r.output
    gate = CliRunner().invoke(main, ["gate", str(tmp_path / "lt"), "--baseline", str(BOARD)])
    assert gate.exit_code == 0, gate.output
    worse = CliRunner().invoke(main, ["gate", str(tmp_path / "lt"), "--baseline", str(BOARD),
                                      "--editor", "synth-context", "--metric", "scene_ga"])
    assert worse.exit_code == 1, worse.output
