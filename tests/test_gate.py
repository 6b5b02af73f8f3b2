"""The CI gate: regressions fail, improvements and noise pass, incomparable baselines are usage errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from results_fixtures import JUDGES, default_scores, make_run

from micebench.results import gate, leaderboard
from micebench.results.cli import gate as gate_cmd
from micebench.results.run import open_run

N = 40


def shifted(delta_if: float, noise: float = 0.0, seed: int = 0):
    """Scores of the baseline (seed 0 draws) with IF shifted by ``delta_if`` plus uniform noise."""
    base = default_scores(0.7)

    def scores(rng, s, t):
        vals = base(rng, s, t)
        jitter = np.random.default_rng(seed * 10_000 + s * 10 + t).uniform(-noise, noise)
        vals["scene_if"] = float(np.clip(vals["scene_if"] + delta_if + jitter, 0, 1))
        return vals

    return scores


@pytest.fixture()
def board(tmp_path):
    base = make_run(tmp_path, "base", n_sessions=N, scores=shifted(0.0))
    path = tmp_path / "lb" / "synth.csv"
    leaderboard.publish([open_run(base)], path)
    return path


def invoke(*args):
    return CliRunner().invoke(gate_cmd, [str(a) for a in args])


def test_regression_fails_with_exit_1_and_junit(tmp_path, board):
    run = make_run(tmp_path, "worse", n_sessions=N, scores=shifted(-0.25))
    junit = tmp_path / "out" / "gate.xml"
    res = invoke(run, "--baseline", board, "--junit", junit)
    assert res.exit_code == 1, res.output
    assert "REGRESSION" in res.output and "gate: FAIL" in res.output
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "1" and suite.get("tests") == "3"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["scene_if"]


def test_improvement_passes(tmp_path, board):
    run = make_run(tmp_path, "better", n_sessions=N, scores=shifted(+0.25))
    res = invoke(run, "--baseline", board, "--json")
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    verdicts = {c["metric"]: c["verdict"] for c in payload["checks"]}
    assert verdicts == {"scene_if": "improvement", "scene_cc": "ok", "scene_ga": "ok"}
    assert payload["passed"] is True and payload["exit_code"] == 0


def test_noise_within_tolerance_passes(tmp_path, board):
    run = make_run(tmp_path, "noisy", n_sessions=N, scores=shifted(-0.01, noise=0.05, seed=1))
    res = invoke(run, "--baseline", board, "--json")
    assert res.exit_code == 0, res.output
    check = next(c for c in json.loads(res.output)["checks"] if c["metric"] == "scene_if")
    assert -0.03 < check["delta"] < 0.01 and check["verdict"] == "ok"


def test_large_but_insignificant_drop_passes(tmp_path):
    # 6 sessions, IF down 0.5 in 2 of them: a mean drop of 0.11, but the paired CI reaches 0 (noise).
    base = make_run(tmp_path, "base", n_sessions=6, scores=shifted(0.0))
    path = tmp_path / "lb.csv"
    leaderboard.publish([open_run(base)], path)

    def few(rng, s, t):
        vals = shifted(0.0)(rng, s, t)
        vals["scene_if"] = max(0.0, vals["scene_if"] - (0.5 if s in (1, 4) else 0.0))
        return vals

    run = make_run(tmp_path, "run", n_sessions=6, scores=few)
    result = gate.run_gate(open_run(run), path, metrics=["scene_if"], min_pairs=2)
    (check,) = result.checks
    assert check.delta < -0.02 and check.ci_high > -1e-9
    assert check.verdict == "ok" and result.exit_code == 0


def test_tighter_tolerance_and_per_metric_tolerance(tmp_path, board):
    run = make_run(tmp_path, "worse", n_sessions=N, scores=shifted(-0.25))
    assert invoke(run, "--baseline", board, "--tolerance", "0.5").exit_code == 0
    res = invoke(run, "--baseline", board, "--tolerance", "scene_if=0.5", "--metric", "scene_if")
    assert res.exit_code == 0, res.output
    assert invoke(run, "--baseline", board, "--metric", "scene_cc").exit_code == 0


def test_lower_is_better_direction():
    assert gate._verdict(+0.1, 0.05, 0.15, 0.02) == "improvement"
    assert gate._verdict(-0.1, -0.15, -0.05, 0.02) == "regression"
    assert gate._verdict(-0.1, -0.15, 0.01, 0.02) == "ok"
    assert gate._verdict(-0.01, -0.015, -0.005, 0.02) == "ok"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"suite_version": "2"}, "suite version differs"),
        ({"judges": [{**JUDGES[0], "prompt_hash": "abc", "metrics": ["if", "cc", "ga"]}]}, "judges"),
        ({"editor": "other"}, "no baseline row"),
    ],
)
def test_incomparable_baseline_exits_2(tmp_path, board, kwargs, message):
    run = make_run(tmp_path, "other", n_sessions=N, **kwargs)
    res = invoke(run, "--baseline", board)
    assert res.exit_code == 2 and message in res.output


def test_usage_errors_exit_2(tmp_path, board):
    run = make_run(tmp_path, "r", n_sessions=N)
    assert invoke(run, "--baseline", tmp_path / "missing.csv").exit_code == 2
    res = invoke(run, "--baseline", board, "--metric", "scene_nope")
    assert res.exit_code == 2 and "scene_nope" in res.output
    assert invoke(run, "--baseline", board, "--tolerance", "lots").exit_code == 2
    # --editor picks another editor's row: compares across editors on purpose
    other = make_run(tmp_path, "o", n_sessions=N, editor="identity")
    assert invoke(other, "--baseline", board, "--editor", "synth-context").exit_code in (0, 1)
    (leaderboard.sessions_dir(board) / f"{leaderboard.read_board(board)['row_id'][0]}.csv").unlink()
    res = invoke(run, "--baseline", board)
    assert res.exit_code == 2 and "republish" in res.output


def test_partial_run_pairs_on_common_sessions(tmp_path, board):
    run = make_run(tmp_path, "part", n_sessions=N // 2, scores=shifted(0.0))
    result = gate.run_gate(open_run(run), board)
    assert all(c.paired_sessions == N // 2 for c in result.checks)
    assert any("paired 20 sessions" in n for n in result.notes)
    assert all(c.delta == pytest.approx(0.0) for c in result.checks) and result.exit_code == 0


def test_unscored_metric_is_no_data_and_json_is_strict(tmp_path, board):
    statuses = {(s, t, "scene_cc"): ("unscored", "timeout") for s in range(N) for t in (1, 2, 3)}

    def extra(rng, s, t):
        return {**shifted(0.0)(rng, s, t), "scene_new": 0.5}

    run = make_run(tmp_path, "blind", n_sessions=N, statuses=statuses, scores=extra)
    res = invoke(run, "--baseline", board, "--json", "--max-coverage-drop", "1")
    assert res.exit_code == 0, res.output

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    payload = json.loads(res.output, parse_constant=no_constants)
    cc = next(c for c in payload["checks"] if c["metric"] == "scene_cc")
    assert cc["verdict"] == "no data" and cc["delta"] is None and cc["run_coverage"] == 0.0
    assert any("not in the baseline, not gated: scene_new" in n for n in payload["notes"])
    result = gate.run_gate(open_run(run), board, max_coverage_drop=None)
    suite = ET.fromstring(gate.junit_xml(result).split("?>", 1)[1])
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"


def test_coverage_drop_fails_even_when_scored_turns_look_the_same(tmp_path, board):
    # the editor now crashes on 1 turn in 6: those turns are not scored, the rest score as before
    crashes = {(s, 2) for s in range(0, N, 2)}
    run = make_run(tmp_path, "crashy", n_sessions=N, scores=shifted(0.0), edit_errors=crashes)
    res = invoke(run, "--baseline", board)
    assert res.exit_code == 1, res.output
    assert "COVERAGE DROP" in res.output
    assert invoke(run, "--baseline", board, "--max-coverage-drop", "0.2").exit_code == 0
    junit = tmp_path / "gate.xml"
    invoke(run, "--baseline", board, "--junit", junit)
    failures = [f.get("message") for f in ET.parse(junit).getroot().iter("failure")]
    assert failures and all("lost coverage" in m for m in failures)


def test_too_few_pairs_is_insufficient_with_exit_3_in_table_json_and_junit(tmp_path, board):
    run = make_run(tmp_path, "few", n_sessions=4, scores=shifted(0.0))  # 4 paired sessions < 10
    junit = tmp_path / "gate.xml"
    res = invoke(run, "--baseline", board, "--junit", junit)
    assert res.exit_code == 3, res.output
    assert "gate: INSUFFICIENT" in res.output and "fewer than --min-pairs 10" in res.output
    js = invoke(run, "--baseline", board, "--json")
    payload = json.loads(js.output)
    assert js.exit_code == 3 and payload["verdict"] == "insufficient" and payload["exit_code"] == 3
    assert {c["verdict"] for c in payload["checks"]} == {"insufficient"} and not payload["passed"]
    suite = ET.parse(junit).getroot()
    assert suite.get("errors") == "3" and suite.get("failures") == "0"
    assert all(c.find("error") is not None for c in suite.iter("testcase"))
    # the same run passes when the user accepts 4 pairs, and a real regression still exits 1
    assert invoke(run, "--baseline", board, "--min-pairs", "4").exit_code == 0
    worse = make_run(tmp_path, "few-worse", n_sessions=12, scores=shifted(-0.5))
    assert invoke(worse, "--baseline", board).exit_code == 1
    assert invoke(run, "--baseline", board, "--min-pairs", "0").exit_code == 2


def _manifest_judges(run_dir, **fields):
    m = json.loads((run_dir / "manifest.json").read_text())
    m["judges"] = [{**j, **fields} for j in m["judges"]]
    (run_dir / "manifest.json").write_text(json.dumps(m))
    return run_dir


def test_gate_refuses_random_weights_and_another_judge_protocol(tmp_path, board):
    random = _manifest_judges(make_run(tmp_path, "rnd", n_sessions=N), random_weights=True)
    res = invoke(random, "--baseline", board)
    assert res.exit_code == 2 and "random weights" in res.output
    upstream = _manifest_judges(make_run(tmp_path, "up", n_sessions=N), protocol="upstream")
    res = invoke(upstream, "--baseline", board)
    assert res.exit_code == 2 and "judge protocol differs (scene: upstream vs strict" in res.output
    strict = _manifest_judges(make_run(tmp_path, "st", n_sessions=N), protocol="strict")
    assert invoke(strict, "--baseline", board).exit_code == 0  # absent means strict: the same protocol
