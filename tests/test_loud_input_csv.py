"""CSV injection: no CSV micebench writes has a text cell a spreadsheet would run as a formula; numbers
stay numbers; what micebench reads back is exactly what it wrote; Parquet keeps the raw text."""

from __future__ import annotations

import csv
import json
import random

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from results_fixtures import make_run

from micebench import csvsafe
from micebench.cli import main

try:  # the results package of issue 13 (another branch) moved these; this test runs before and after
    from micebench import open_run
    from micebench.results import leaderboard
except ImportError:
    from micebench.tables import load_run as open_run

    from micebench import leaderboard

EVIL = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1,2)",
        "\t=1+1", "\r=1+1", "'=already quoted", "''-x", "-", "=", "-inf-ish"]  # fmt: skip
NUMBERS = ["-0.5", "+3", "-1e-05", "1.0000", "-0.0000", "0.1234", "-inf", "inf", "nan", "-12", ".5", "-.5"]


def cells(path):
    with open(path, newline="") as f:
        return [c for r in csv.reader(f) for c in r]


def assert_safe(path):
    bad = [c for c in cells(path) if c.startswith(csvsafe.TRIGGERS) and not csvsafe.is_number(c)]
    assert not bad, f"{path}: formula-like cells {bad[:5]}"


@pytest.mark.parametrize("text", EVIL)
def test_formula_cells_are_neutralised_and_restored(text):
    out = csvsafe.cell(text)
    assert not out.startswith(csvsafe.TRIGGERS) and out.startswith("'")
    assert csvsafe.restore(out) == text


@pytest.mark.parametrize("text", NUMBERS + ["plain", "'quoted'", "", "a=b", "x-1"])
def test_numbers_and_harmless_text_are_written_as_is(text):
    assert csvsafe.cell(text) == text and csvsafe.restore(text) == text


def test_round_trip_on_random_strings():
    rng = random.Random(0)
    alphabet = "=+-@\t\r'a1.eE "
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        out = csvsafe.cell(s)
        assert csvsafe.restore(out) == s, repr(s)
        assert not out.startswith(csvsafe.TRIGGERS) or csvsafe.is_number(out), repr(s)
    assert csvsafe.cell(3.5) == 3.5 and csvsafe.cell(None) is None  # non-text passes through


def test_turns_csv_is_safe_and_parquet_keeps_raw_text(tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    suite = {"name": "csv-suite", "sessions": [{"id": "@s1", "subset": "-cm", "image": "a.png", "turns": [
        {"instruction": EVIL[0], "task_type": "color_alter", "formatted_instruction": "+[x]"}]}]}
    (tmp_path / "s.yaml").write_text(json.dumps(suite))  # JSON is YAML
    r = CliRunner().invoke(main, ["run", "--suite", str(tmp_path / "s.yaml"), "--model", "identity", "--judge",
                                  "pixel", "--out", str(tmp_path / "runs"), "--run-name", "x", "-q"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "x"
    assert_safe(run / "turns.csv")
    raw = pd.read_parquet(run / "turns.parquet")
    assert raw.loc[0, "instruction"] == EVIL[0] and raw.loc[0, "session_id"] == "@s1"
    back = csvsafe.restore_frame(pd.read_csv(run / "turns.csv", dtype=str, keep_default_na=False))
    assert list(back["instruction"]) == [EVIL[0]] and list(back["subset"]) == ["-cm"]
    assert list(back["formatted_instruction"]) == ["+[x]"]


def test_leaderboard_and_sidecars_are_safe_and_the_gate_reads_them_back(tmp_path):
    run = make_run(tmp_path, "a", editor="=cmd|' /C calc'!A0", n_sessions=10,
                   instruction=lambda s, t: f"=1+{s}")  # fmt: skip
    df = pd.read_parquet(run / "turns.parquet")
    df["session_id"] = ["-" + s if i % 2 else "@" + s for i, s in enumerate(df["session_id"])]
    df.to_parquet(run / "turns.parquet", index=False)
    board = tmp_path / "lb" / "synth.csv"
    leaderboard.publish([open_run(run)], board)
    assert_safe(board)
    for side in leaderboard.sessions_dir(board).iterdir():
        assert_safe(side)
    got = leaderboard.read_board(board)
    assert set(got["editor"]) == {"=cmd|' /C calc'!A0"}
    row = got.iloc[0]
    sidecar = leaderboard.read_sessions(board, row["row_id"])
    assert set(sidecar["session_id"]) == set(df["session_id"])
    # republishing what was read back is byte-identical (escaping is idempotent through a round trip)
    before = board.read_text()
    leaderboard.publish([open_run(run)], board)
    assert board.read_text() == before
    res = CliRunner().invoke(main, ["gate", str(run), "--baseline", str(board)])
    assert res.exit_code == 0, res.output


def test_negative_numbers_round_trip_exactly_in_sidecars(tmp_path):
    frame = pd.DataFrame({"session_id": ["-1", "=x", "s"], "subset": ["cm", "cm", "@cu"],
                          "m": [-0.5, 1e-05, -0.1 + 0.2], "m_n": [1, 2, 3]})  # fmt: skip
    path = tmp_path / "b.sessions" / "r.csv"
    leaderboard.write_sessions(path, frame)
    assert_safe(path)
    text = path.read_text()
    assert "\n-1,cm,-0.5,1\n" in text  # a number is written as a number
    back = leaderboard.read_sessions(tmp_path / "b.csv", "r")
    assert list(back["session_id"]) == ["-1", "=x", "s"] and list(back["subset"]) == ["cm", "cm", "@cu"]
    assert list(back["m"]) == [-0.5, 1e-05, -0.1 + 0.2]  # exact, bit for bit
