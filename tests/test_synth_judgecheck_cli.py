"""``micebench judge-check`` (the click command in micebench.cli_judgecheck)."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from micebench.cli_judgecheck import judge_check


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MICEBENCH_CACHE", str(tmp_path / "cache"))


def test_scene_table_and_csv(tmp_path):
    out = tmp_path / "jc.csv"
    r = CliRunner().invoke(judge_check, ["--judge", "scene", "-S", "n=1", "--noise", "jpeg", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert {"metric", "task_type", "n", "accuracy", "false_pass_rate", "false_fail_rate", "unscored"} <= set(df.columns)
    assert (df[df.task_type == "all"]["accuracy"] >= 0.99).all()
    assert "false_pass" in r.output


def test_bad_usage_is_explained():
    r = CliRunner().invoke(judge_check, ["--judge", "pixel", "-S", "n=1"])
    assert r.exit_code != 0 and "map" in r.output
    r = CliRunner().invoke(judge_check, ["--judge", "scene", "--suite", "photos"])
    assert r.exit_code == 2 and "exact ground truth" in r.output
    r = CliRunner().invoke(judge_check, ["--judge", "scene", "--map", "xx=cc"])
    assert r.exit_code == 2 and "if, cc or ga" in r.output
    r = CliRunner().invoke(judge_check, ["--judge", "scene", "-J", "nope=1", "-S", "n=1"])
    assert r.exit_code != 0 and "nope" in r.output


def test_breakdown_by_case_lists_every_probe_and_error():
    r = CliRunner().invoke(judge_check, ["--judge", "scene", "-S", "n=2", "--by", "case"])
    assert r.exit_code == 0, r.output
    for name in ("oracle", "synth-context", "synth-lastturn", "synth-drift", "nothing_done", "wrong_color",
                 "background_altered", "right_edit_wrong_object", "wrong_object", "rule_broken"):
        assert name in r.output


def test_judge_profile_yaml_is_accepted(tmp_path):
    cfg = tmp_path / "scene.yaml"
    cfg.write_text("judge: scene\ncache_size: 10\n")
    r = CliRunner().invoke(judge_check, ["--judge", "scene", "--judge-config", str(cfg), "-S", "n=1", "--by", "turn"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(judge_check, ["--judge", "pixel", "--judge-config", str(cfg), "-S", "n=1"])
    assert r.exit_code == 2 and "configures judge 'scene'" in r.output
