"""--shard K/N and `micebench merge`: shards merge into the unsharded run's table; merge refuses
shards that overlap, miss a part, are unfinished or do not match, with exit 2 and a message."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from micebench.cli import main
from micebench.merge import ShardError, parse_shard, shard_of, shard_suite
from micebench.suites.resolve import load_suite

RUN = ["run", "--suite", "synth", "-S", "n=3", "--seed", "0", "--model", "synth-context", "--judge", "scene",
       "--judge", "pixel", "--batch-size", "2", "-q"]


def _table(run_dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "turns.parquet")
    return df.drop(columns=["seconds"]).reset_index(drop=True)


def _run(out: Path, name: str, *extra: str) -> Path:
    r = CliRunner().invoke(main, [*RUN, "--out", str(out), "--run-name", name, *extra])
    assert r.exit_code == 0, r.output
    return out / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    full = _run(out, "full")
    shards = [_run(out, f"s{k}", "--shard", f"{k}/3") for k in (1, 2, 3)]
    return out, full, shards


def test_partition_is_deterministic_disjoint_and_complete():
    suite = load_suite("synth", {"n": 10}, seed=0)
    parts = [shard_suite(suite, k, 4) for k in (1, 2, 3, 4)]
    ids = [s.id for p, _ in parts for s in p.sessions]
    assert sorted(ids) == sorted(s.id for s in suite.sessions) and len(set(ids)) == len(ids)
    assert all(p.sessions for p, _ in parts)  # 20 sessions over 4 shards: none empty
    for (p, info), k in zip(parts, (1, 2, 3, 4), strict=True):
        assert [suite.sessions[i] for i in info["positions"]] == list(p.sessions)
        assert info["suite_digest"] == suite.digest() and info["index"] == k and info["count"] == 4
    # by id only: the same session lands in the same shard whatever else the suite holds
    assert shard_of("cm/0279d5671c3214e5", 7) == shard_of("cm/0279d5671c3214e5", 7)
    assert {shard_of(s.id, 4) for s in suite.sessions} == {1, 2, 3, 4}
    with pytest.raises(ShardError, match="between 1 and N"):
        parse_shard("0/3")
    with pytest.raises(ShardError, match="expected K/N"):
        parse_shard("2of3")


def test_merged_shards_equal_the_unsharded_run(runs, tmp_path):
    out, full, shards = runs
    manifests = [json.loads((s / "manifest.json").read_text()) for s in shards]
    assert [m["shard"]["index"] for m in manifests] == [1, 2, 3]
    assert sum(len(m["shard"]["positions"]) for m in manifests) == 6
    r = CliRunner().invoke(main, ["merge", *map(str, reversed(shards)), "-o", str(tmp_path / "merged")])
    assert r.exit_code == 0, r.output
    merged = tmp_path / "merged"
    pd.testing.assert_frame_equal(_table(merged), _table(full))
    m = json.loads((merged / "manifest.json").read_text())
    f = json.loads((full / "manifest.json").read_text())
    assert m["suite"]["digest"] == f["suite"]["digest"] and m["suite"]["n_sessions"] == 6
    assert m["counts"] == f["counts"] and [x["shard"] for x in m["merged_from"]] == ["1/3", "2/3", "3/3"]
    # every image the table names is in the merged run's store
    df = _table(merged)
    assert all((merged / "images" / f"{h}.png").is_file() for h in set(df.output_hash) | set(df.input_hash))
    # the merged run is an ordinary run: summary reads it
    assert CliRunner().invoke(main, ["summary", str(merged)]).exit_code == 0


def _refused(tmp_path, *dirs, match: str) -> None:
    r = CliRunner().invoke(main, ["merge", *map(str, dirs), "-o", str(tmp_path / "m")])
    assert r.exit_code == 2, r.output
    assert match in r.output, r.output
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.merging-*"))


def test_merge_refuses_overlapping_shards(runs, tmp_path):
    _, _, (s1, s2, s3) = runs
    _refused(tmp_path, s1, s2, s3, s2, match="overlapping shards: shard 2/3 given more than once")


def test_merge_refuses_a_missing_shard(runs, tmp_path):
    _, _, (s1, _, s3) = runs
    _refused(tmp_path, s1, s3, match="incomplete: shard 2/3 missing")


def test_merge_refuses_mismatched_shards(runs, tmp_path):
    out, full, (s1, s2, _) = runs
    other = _run(tmp_path, "other", "--shard", "3/3", "--batch-size", "3")
    _refused(tmp_path, s1, s2, other, match="shards do not match: batch_size differs")
    other_suite = CliRunner().invoke(main, [*RUN[:4], "n=4", *RUN[5:], "--out", str(tmp_path), "--run-name", "o4",
                                            "--shard", "3/3"])
    assert other_suite.exit_code == 0, other_suite.output
    _refused(tmp_path, s1, s2, tmp_path / "o4", match="shards do not match: suite (name, version")
    _refused(tmp_path, s1, s2, full, match=f"{full} is not a shard")


def test_merge_refuses_an_unfinished_shard(runs, tmp_path):
    import shutil

    _, _, (s1, s2, s3) = runs
    broken = tmp_path / "s3"
    shutil.copytree(s3, broken)
    con = sqlite3.connect(broken / "run.sqlite")
    with con:
        con.execute("DELETE FROM turns WHERE turn >= 1")
    con.close()
    _refused(tmp_path, s1, s2, broken, match=f"{broken}: shard not finished (")
    assert "micebench run --resume" in CliRunner().invoke(main, ["merge", str(s1), str(s2), str(broken), "-o",
                                                                 str(tmp_path / "m")]).output


def test_merge_will_not_overwrite(runs, tmp_path):
    _, _, shards = runs
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    r = CliRunner().invoke(main, ["merge", *map(str, shards), "-o", str(tmp_path / "taken")])
    assert r.exit_code == 2 and "already exists" in r.output
    assert (tmp_path / "taken" / "x").read_text() == "mine"
