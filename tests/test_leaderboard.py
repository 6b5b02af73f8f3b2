"""Leaderboard CSVs: keyed rows, replacement, stable format, per-session sidecars, ranked display."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
from click.testing import CliRunner
from results_fixtures import default_scores, make_run

from micebench.results import aggregate as tables
from micebench.results import leaderboard
from micebench.results.cli import leaderboard as lb_cmd
from micebench.results.run import open_run
from micebench.spec import MetricSpec


def publish(*args):
    return CliRunner().invoke(lb_cmd, ["publish", *map(str, args)])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_publish_writes_one_row_per_subset_plus_all(tmp_path):
    run = make_run(tmp_path, "a", n_sessions=10, subsets=("cm", "cu"))
    board = tmp_path / "lb" / "synth.csv"
    res = publish(run, "--to", board)
    assert res.exit_code == 0, res.output
    got = rows(board)
    assert [r["subset"] for r in got] == ["all", "cm", "cu"]
    header = next(csv.reader(board.open()))
    assert header[: len(leaderboard.KEY_COLUMNS)] == list(leaderboard.KEY_COLUMNS)
    assert header.index("scene_cc") < header.index("scene_ga") < header.index("scene_if")  # metrics sorted
    i = header.index("scene_if")
    assert header[i : i + 5] == ["scene_if", "scene_if_lo", "scene_if_hi", "scene_if_cov", "scene_if_t1"]
    assert "scene_if_succ_t3" in header and "scene_cc_succ_t1" not in header
    df = open_run(run).turns()
    expect = tables.overall(df[df["subset"] == "cm"], ["scene_if"]).iloc[0]["mean"]
    cm = next(r for r in got if r["subset"] == "cm")
    assert cm["scene_if"] == f"{expect:.4f}" and cm["sessions"] == "5" and cm["turns"] == "15"
    assert cm["judges"] == "scene@1" and len(cm["judge_hash"]) == 12
    sidecar = leaderboard.read_sessions(board, cm["row_id"])
    assert list(sidecar["session_id"]) == [f"s{i:03d}" for i in range(0, 10, 2)]
    assert {"scene_if", "scene_if_n"} <= set(sidecar.columns)


def test_republish_replaces_same_key_and_keeps_others(tmp_path):
    board = tmp_path / "synth.csv"
    a = make_run(tmp_path, "a", n_sessions=6, scores=default_scores(0.9))
    b = make_run(tmp_path, "b", n_sessions=6, editor="identity", config_hash="cfg0002", scores=default_scores(0.1))
    assert publish(a, b, "--to", board).exit_code == 0
    before = board.read_text()
    a2 = make_run(tmp_path, "a2", n_sessions=6, scores=default_scores(0.2), seed=5)
    res = publish(a2, "--to", board)
    assert res.exit_code == 0 and "1 replaced" in res.output
    got = rows(board)
    assert len(got) == 2
    assert {r["run_id"] for r in got} == {"a2", "b"}
    # the identity row is byte-identical: only the replaced line changes in a diff
    changed = set(before.splitlines()) ^ set(board.read_text().splitlines())
    assert len(changed) == 2 and all("synth-context" in line for line in changed)
    # a different config hash is a new row, not a replacement
    a3 = make_run(tmp_path, "a3", n_sessions=6, config_hash="cfg0009")
    publish(a3, "--to", board)
    assert len(rows(board)) == 3


def test_publish_is_deterministic_and_numbers_are_fixed_format(tmp_path):
    run = make_run(tmp_path, "a", n_sessions=5, statuses={(0, 1, "scene_cc"): ("unscored", "timeout")})
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    publish(run, "--to", one)
    publish(run, "--to", two)
    assert one.read_text() == two.read_text()
    row = rows(one)[0]
    for col in ("scene_if", "scene_cc_lo", "scene_cc_cov", "scene_ga_t2"):
        assert len(row[col].split(".")[1]) == 4
    assert row["scene_cc_cov"] == f"{14 / 15:.4f}"


def test_publish_refuses_unfinished_and_duplicate_keys(tmp_path):
    run = make_run(tmp_path, "a", n_sessions=4)
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"finished": "2026-11-27T08:05:00Z"', '"finished": null'))
    res = publish(run, "--to", tmp_path / "x.csv")
    assert res.exit_code == 2 and "unfinished" in res.output
    assert publish(run, "--to", tmp_path / "x.csv", "--allow-unfinished").exit_code == 0
    twin = make_run(tmp_path, "twin", n_sessions=4, seed=3)
    res = publish(twin, twin, "--to", tmp_path / "y.csv")
    assert res.exit_code == 2 and "both give the row" in res.output
    not_board = tmp_path / "other.csv"
    not_board.write_text("model,score\nx,1\n")
    res = publish(twin, "--to", not_board)
    assert res.exit_code == 2 and "not a micebench leaderboard" in res.output


def test_show_ranks_best_first(tmp_path):
    board = tmp_path / "synth.csv"
    runs = [
        make_run(tmp_path, name, n_sessions=8, editor=name, scores=default_scores(p))
        for name, p in (("mid", 0.5), ("top", 0.95), ("low", 0.1))
    ]
    publish(*runs, "--to", board)
    table = leaderboard.ranked(leaderboard.read_board(board), "scene_if")
    assert list(table["editor"]) == ["top", "mid", "low"] and list(table["rank"]) == ["1", "2", "3"]
    res = CliRunner().invoke(lb_cmd, ["show", str(board), "--sort", "scene_if", "--columns", "editor,scene_if"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split() == ["rank", "editor", "scene_if"] and lines[1].split()[1] == "top"
    bad = CliRunner().invoke(lb_cmd, ["show", str(board), "--sort", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_lower_is_better_sorts_ascending():
    board = pd.DataFrame(
        {"editor": ["a", "b", "c"], "p_lpips": ["0.3", "", "0.1"], "p_lpips_cov": ["1", "0", "1"]}
    )
    specs = {"p_lpips": MetricSpec(name="p_lpips", role="cc", higher_is_better=False)}
    table = leaderboard.ranked(board, specs=specs)
    assert list(table["editor"]) == ["c", "a", "b"] and list(table["rank"]) == ["1", "2", ""]
    # the spec decides, not the name: without it the same column ranks descending
    assert list(leaderboard.ranked(board)["editor"]) == ["a", "c", "b"]


def test_show_reads_literature_file():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "leaderboards" / "literature.csv"
    if not path.exists():
        pytest.skip("leaderboards/literature.csv not written yet")
    res = CliRunner().invoke(lb_cmd, ["show", str(path), "--sort", "value", "--columns", "benchmark,model,value"])
    assert res.exit_code == 0, res.output
    lit = rows(path)
    assert lit and all(r["status"] == "reported, not reproduced" for r in lit)
    assert all(r["source"].startswith("https://") and r["locator"] and r["paper"] for r in lit)
    assert all(float(r["value"]) >= 0 for r in lit)


def test_show_ranks_within_each_subset_by_if_and_shows_min_coverage(tmp_path):
    board = tmp_path / "synth.csv"
    runs = [
        make_run(tmp_path, name, n_sessions=8, editor=name, subsets=("cm", "cu"), scores=default_scores(p),
                 statuses={(0, 1, "scene_cc"): ("unscored", "timeout")} if name == "top" else None)
        for name, p in (("mid", 0.5), ("top", 0.95))
    ]
    publish(*runs, "--to", board)
    specs = leaderboard.read_specs(board)  # published beside the board from the runs' judge specs
    assert specs["scene_if"].role == "if" and specs["scene_cc"].role == "cc"
    table = leaderboard.ranked(leaderboard.read_board(board), specs=specs)  # default sort: the IF metric
    assert list(table["subset"]) == ["all", "all", "cm", "cm", "cu", "cu"]
    assert list(table["rank"]) == ["1", "2"] * 3 and list(table["editor"]) == ["top", "mid"] * 3
    assert "scene_cc_cov" not in table.columns
    top_all = table[(table["editor"] == "top") & (table["subset"] == "all")].iloc[0]
    assert top_all["min_cov"] == f"{23 / 24:.4f}"  # one of 24 scene_cc turns unscored


def _with_judge_fields(run_dir, **fields):
    import json

    m = json.loads((run_dir / "manifest.json").read_text())
    m["judges"] = [{**j, **fields} for j in m["judges"]]
    (run_dir / "manifest.json").write_text(json.dumps(m))
    return run_dir


def test_publish_refuses_random_weights(tmp_path):
    run = _with_judge_fields(make_run(tmp_path, "rnd", n_sessions=4), random_weights=True)
    board = tmp_path / "b.csv"
    res = publish(run, "--to", board)
    assert res.exit_code == 2 and "random weights" in res.output and "not publishable" in res.output
    assert not board.exists()


def test_publish_refuses_to_mix_judge_protocols(tmp_path):
    board = tmp_path / "b.csv"
    assert publish(make_run(tmp_path, "strict", n_sessions=4), "--to", board).exit_code == 0
    assert rows(board)[0]["judge_protocols"] == "scene:strict"
    before = board.read_text()
    up = _with_judge_fields(make_run(tmp_path, "up", n_sessions=4, editor="other"), protocol="upstream")
    res = publish(up, "--to", board)
    assert res.exit_code == 2 and "judge protocol differs" in res.output and "scene: upstream vs strict" in res.output
    assert board.read_text() == before  # nothing written
    # within one call too
    a = _with_judge_fields(make_run(tmp_path, "a", n_sessions=4, editor="x"), protocol="upstream")
    res = publish(make_run(tmp_path, "b", n_sessions=4, editor="y"), a, "--to", tmp_path / "c.csv")
    assert res.exit_code == 2 and "judge protocol differs" in res.output
