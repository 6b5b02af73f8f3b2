"""The typed run: RunManifest reads old and new manifests, Run gives the table, specs and images, and
metric meaning travels from a judge's MetricSpec through the manifest into the results tools."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from results_fixtures import make_run

from micebench.evaluate import start_run
from micebench.results import aggregate, leaderboard
from micebench.results.run import ResultsError, RunManifest, metric_column, open_run
from micebench.runner import RunSettings
from micebench.suites.resolve import load_suite


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    suite = load_suite("synth", {"n": 3, "turns": 2}, seed=0)
    out = tmp_path_factory.mktemp("runs")
    start_run(suite, "synth-drift", {}, [("scene", {}), ("custom_judges:DarknessJudge", {})], out=out,
              run_name="r", settings=RunSettings(batch_size=4, progress=False))
    return out / "r"


def test_open_run_gives_typed_manifest_table_specs_and_images(small_run):
    run = open_run(small_run)
    assert run.manifest.editor.name == "synth-drift" and run.manifest.suite.name == "synth"
    assert run.manifest.finished and [j.name for j in run.manifest.judges] == ["scene", "custom_judges:DarknessJudge"]
    df = run.turns()
    assert list(df.columns[:2]) == ["run_id", "editor"] and set(df["editor"]) == {"synth-drift"}
    assert all(pd.io.common.file_exists(p) for p in df["output_path"]) and (df["status"] == "ok").all()
    specs = run.metric_specs()
    assert specs["scene_if"].role == "if" and specs["scene_ga"].role == "ga"
    dark = specs["custom_judges:DarknessJudge_darkness"]
    assert dark.role == "cc" and not dark.higher_is_better  # declared by a judge no micebench file names
    first = df["session_id"].iloc[0]
    images = run.images(first)
    assert len(images) == 3 and all(p.is_file() for p in images)
    with pytest.raises(KeyError, match="nope"):
        run.images("nope")
    summary = run.summary(n_boot=50)
    assert set(summary["turn"]) == {1, 2, "all"} and "scene_if" in set(summary["metric"])


def test_a_new_lower_is_better_metric_ranks_ascending_on_the_board(small_run, tmp_path):
    board = tmp_path / "b.csv"
    leaderboard.publish([open_run(small_run)], board)
    specs = leaderboard.read_specs(board)
    col = "custom_judges:DarknessJudge_darkness"
    assert not specs[col].higher_is_better and specs[col].role == "cc"
    frame = pd.DataFrame({"editor": ["a", "b"], col: ["0.9", "0.1"], f"{col}_cov": ["1", "1"]})
    assert list(leaderboard.ranked(frame, col, specs=specs)["editor"]) == ["b", "a"]


def test_old_manifest_without_new_fields_still_opens(tmp_path):
    run_dir = make_run(tmp_path, "old")
    m = json.loads((run_dir / "manifest.json").read_text())
    for key in ("finished", "python", "torch", "seed", "batch_size", "turn_timeout", "git_sha"):
        m.pop(key)
    m["judges"][0].pop("prompt_hash")
    m["shard"] = {"index": 0}  # a field a newer writer added: kept, not refused
    (run_dir / "manifest.json").write_text(json.dumps(m))
    run = open_run(run_dir)
    assert run.manifest.finished is None and run.manifest.model_extra["shard"] == {"index": 0}
    # no metric_specs recorded: the registered scene judge's declaration is used
    assert run.metric_specs()["scene_if"].role == "if"
    assert run.manifest.judges[0].protocol == "strict" and not run.manifest.judges[0].random_weights


def test_doubled_column_names_of_old_tables_are_undone(tmp_path):
    run_dir = make_run(tmp_path, "clip", judges=[{"name": "clip", "key": "clip-x", "metrics": ["clip_i_src"]}],
                       scores=lambda rng, s, t: {"clip_clip_i_src": 0.5})
    run = open_run(run_dir)
    assert metric_column("clip", "clip_i_src") == "clip_i_src" and metric_column("pixel", "l1_src") == "pixel_l1_src"
    assert "clip_i_src" in run.turns().columns and "clip_clip_i_src" not in run.turns().columns
    assert run.metric_specs()["clip_i_src"].role == "cc"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(seed="abc"), "field 'seed'"),
        (lambda m: m["judges"].append({"key": "x"}), "field 'judges.1.name'"),
        (lambda m: m.clear() or m.update(x=[1]) or None, None),
    ],
)
def test_bad_manifest_fields_are_named(tmp_path, change, message):
    run_dir = make_run(tmp_path, "bad")
    m = json.loads((run_dir / "manifest.json").read_text())
    change(m)
    (run_dir / "manifest.json").write_text(json.dumps(m))
    if message is None:  # an empty manifest is an old, bare one: it opens with defaults
        assert open_run(run_dir).manifest.editor.name == ""
        return
    with pytest.raises(ResultsError, match=message):
        open_run(run_dir)
    (run_dir / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ResultsError, match="JSON object"):
        RunManifest.read(run_dir / "manifest.json")


def test_table_without_parquet_is_built_from_the_record(small_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    (copy / "turns.parquet").unlink()
    a, b = open_run(small_run).turns(), open_run(copy).turns()
    cols = [c for c in a.columns if not c.endswith("_path") and c != "seconds"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_dtype=False)
    assert aggregate.metric_columns(b) == list(open_run(copy).metric_specs())
