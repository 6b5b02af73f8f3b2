"""What the console says after a run: the reasons turns failed or went unscored, with counts, and a
table that agrees with `micebench summary` (coverage counts failed turns; no metric silently dropped)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from micebench.cli import main
from micebench.results.run import open_run
from micebench.results.summary import summarize

FAULTS = ("faults={synth-cm-0000#1: missing, synth-cm-0001#1: missing, synth-cu-0000#1: missing, "
          "synth-cu-0001#2: error}")


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(main, [
        "run", "--suite", "synth", "-S", "n=4", "-S", "turns=2", "--model", "faulty_editors:FaultyEditor",
        "-M", FAULTS, "--batch-size", "1", "--judge", "pixel", "--judge", "faulty_judges:FlakyJudge",
        "-J", "faulty_judges:FlakyJudge.fail_sessions=[synth-cm-0002]", "--out", str(out), "--run-name", "r", "-q",
    ])  # fmt: skip
    return res, out / "r"


def test_console_names_the_commonest_failure_reasons_with_counts(failed_run):
    res, _ = failed_run
    assert res.exit_code == 1, res.output
    out = res.output
    assert "error: 4 turn(s)" in out and "skipped: 3 turn(s)" in out
    # the install hint reaches the console, counted, not just "error 4, skipped 3"
    assert re.search(r"3 x editor raised ImportError: the model needs torch: pip install 'micebench\[models\]'", out)
    assert "1 x editor says no" in out
    assert re.search(r"unscored: 2 judgement\(s\) \(faulty_judges:FlakyJudge_brightness 2\)", out)
    assert "2 x judge faulty_judges:FlakyJudge failed: ValueError: cannot judge synth-cm-0002" in out


def test_post_run_table_shows_every_metric_and_counts_failed_turns_in_coverage(failed_run):
    res, run_dir = failed_run
    run = open_run(run_dir)
    metrics = list(run.metric_specs())
    assert len(metrics) == 9  # 8 pixel metrics + brightness: more than the 6 the old table cut to
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.split() and line.split()[0] in metrics}
    assert set(lines) == set(metrics)
    overall = summarize([run], n_boot=0).query("turn == 'all'").set_index("metric")
    for m in metrics:
        cov = float(lines[m].split()[-1])
        assert cov == pytest.approx(overall.loc[m, "coverage"], abs=5.01e-4)  # the same numbers as `summary`
    # 16 turns, 7 failed or skipped: pixel coverage is 9/16, not 1.000
    assert overall.loc["pixel_l1_src", "coverage"] == pytest.approx(9 / 16)
    assert "0.562" in lines["pixel_l1_src"]


def test_long_reasons_keep_their_hint_and_an_all_failed_run_says_nothing_was_scored(tmp_path):
    from results_fixtures import make_run

    from micebench.results.quicklook import top_reasons, turn_summary

    hint = ("editor raised CheckpointError: weights 'org/model': not a local folder and not in the local "
            "Hugging Face cache (HF_HOME=~/.cache/huggingface); download it first, e.g. "
            "`huggingface-cli download org/model`, or pass the folder path (LocalEntryNotFoundError)")
    assert top_reasons([hint] * 3 + ["other"]) == [(hint, 3), ("other", 1)]
    run = make_run(tmp_path, "dead", n_sessions=2, n_turns=1, edit_errors={(0, 1), (1, 1)})
    text = turn_summary(run)
    assert "error: 2 turn(s)" in text and "nothing scored" in text and "scene_if" not in text
