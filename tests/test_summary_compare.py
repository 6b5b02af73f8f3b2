"""`micebench summary RUN... --format` across runs, and `micebench compare A B` (paired, with CIs)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from results_fixtures import default_scores, make_run

from micebench.results.cli import compare, summary
from micebench.results.compare import compare_runs
from micebench.results.run import open_run
from micebench.results.summary import summarize


@pytest.fixture()
def two_runs(tmp_path):
    good = make_run(tmp_path, "good", editor="synth-context", n_sessions=16, scores=default_scores(0.9))
    bad = make_run(tmp_path, "bad", editor="synth-lastturn", n_sessions=16, scores=default_scores(0.4),
                   statuses={(0, 1, "scene_cc"): ("unscored", "judge timeout")})
    return good, bad


def invoke(cmd, *args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def test_markdown_of_two_runs_is_one_clean_table(two_runs):
    res = invoke(summary, *two_runs, "--format", "markdown", "--bootstrap", "100")
    assert res.exit_code == 0, res.output
    table = [line for line in res.output.splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, rule, one row per editor
    cells = [line.count("|") for line in table]
    assert len(set(cells)) == 1 and all(line.endswith("|") for line in table)
    assert table[1].replace("|", "").replace("-", "").replace(":", "") == ""
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head[:4] == ["editor", "scene_if t1", "scene_if t2", "scene_if t3"] and "scene_ga all" in head
    assert table[2].startswith("| synth-context |") and table[3].startswith("| synth-lastturn |")
    assert "cov 98%" in table[3] and "[" in table[2]  # coverage shown only where below 100%; CIs everywhere
    long = summarize([open_run(p) for p in two_runs], n_boot=100)
    good_if = long.query("run_id == 'good' and metric == 'scene_if' and turn == 'all'").iloc[0]
    assert f"{good_if['mean']:.3f} [{good_if['ci_low']:.3f}, {good_if['ci_high']:.3f}]" in table[2]


def test_latex_json_and_text_formats(two_runs):
    latex = invoke(summary, *two_runs, "--format", "latex", "--bootstrap", "50")
    assert latex.exit_code == 0 and latex.output.startswith("\\begin{table}")
    assert "scene\\_if t1" in latex.output and "\\toprule" in latex.output and "synth-context" in latex.output
    assert "cov 98\\%" in latex.output  # % escaped
    js = invoke(summary, *two_runs, "--format", "json", "--bootstrap", "50", "--all-metrics")
    payload = json.loads(js.output)
    assert [r["editor"] for r in payload["runs"]] == ["synth-context", "synth-lastturn"]
    assert payload["metrics"]["scene_if"]["role"] == "if"
    row = next(r for r in payload["rows"] if r["run_id"] == "bad" and r["metric"] == "scene_cc" and r["turn"] == 1)
    assert row["scored"] == 15 and row["total"] == 16
    text = invoke(summary, *two_runs, "--bootstrap", "50")
    assert text.exit_code == 0 and "synth-context: run good" in text.output and "== per turn" not in text.output
    single = invoke(summary, two_runs[0], "--bootstrap", "50")
    assert "== per task type" in single.output  # one run: the breakdown tables too


def test_summary_warns_when_runs_are_not_comparable(tmp_path, two_runs):
    other = make_run(tmp_path, "v2", suite_version="2", n_sessions=4)
    res = invoke(summary, two_runs[0], other, "--format", "markdown", "--bootstrap", "0")
    assert res.exit_code == 0 and "differ in suite (synth@1; synth@2)" in res.output


def test_compare_finds_the_worse_run_and_a_run_equals_itself(two_runs):
    good, bad = two_runs
    result = compare_runs(good, bad, n_boot=500)
    row = next(r for r in result.rows if r.metric == "scene_if" and r.turn == "all")
    assert row.pairs == 16 and row.delta < 0 and row.ci_high < 0 and row.verdict == "B worse"
    assert row.delta == pytest.approx(row.b - row.a) and row.losses > row.wins
    same = compare_runs(good, good, n_boot=200)
    assert all(r.delta == 0 and r.verdict in ("no clear difference", "no CI") for r in same.rows)
    assert {r.turn for r in result.rows} == {"all", "1", "2", "3"}
    res = invoke(compare, good, bad, "--format", "json", "--no-turns", "--bootstrap", "200")
    payload = json.loads(res.output)
    assert res.exit_code == 0 and {r["turn"] for r in payload["rows"]} == {"all"}
    md = invoke(compare, good, bad, "--format", "markdown", "--bootstrap", "200")
    assert "| scene_if | all |" in md.output and "B worse" in md.output


def test_compare_pairs_only_shared_sessions_and_refuses_disjoint_runs(tmp_path, two_runs):
    part = make_run(tmp_path, "part", n_sessions=5, scores=default_scores(0.9))
    result = compare_runs(two_runs[0], part, n_boot=100)
    assert all(r.pairs <= 5 for r in result.rows) and any("paired 5 sessions" in n for n in result.notes)
    other = make_run(tmp_path, "other", n_sessions=3)
    other_turns = other / "turns.parquet"
    import pandas as pd

    df = pd.read_parquet(other_turns)
    df["session_id"] = "x" + df["session_id"]
    df.to_parquet(other_turns)
    res = invoke(compare, two_runs[0], other)
    assert res.exit_code == 2 and "share no session" in res.output
    assert math.isnan(compare_runs(two_runs[0], two_runs[1], metrics=["scene_if"], n_boot=0).rows[0].ci_low)
