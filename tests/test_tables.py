"""Aggregate tables: means over scored cells only, coverage, session bootstrap, cumulative success."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from results_fixtures import make_run

from micebench.results import aggregate as tables
from micebench.results.cli import summary
from micebench.results.run import open_run
from micebench.spec import MetricSpec

IF_SPEC = {"j_if": MetricSpec(name="j_if", role="if")}


def table(cells: list[tuple[str, int, str, float | None, str]]) -> pd.DataFrame:
    """Rows of (session, turn, task, value, status) for one metric ``j_if``."""
    return pd.DataFrame(
        [
            {
                "session_id": s,
                "turn": t,
                "task_type": task,
                "status": "ok",
                "subset": "cm" if s < "m" else "cu",
                "j_if": np.nan if v is None else v,
                "j_if_status": st,
                "j_if_reason": "",
            }
            for s, t, task, v, st in cells
        ]
    )


def test_metric_columns_follow_status_convention():
    df = pd.DataFrame(columns=["session_id", "turn", "a_if", "a_if_status", "a_if_reason", "seconds", "b_x_status"])
    assert tables.metric_columns(df) == ["a_if"]  # b_x has a status but no value column


def test_mean_uses_scored_cells_and_coverage_counts_the_rest():
    df = table(
        [
            ("a", 1, "subject_add", 1.0, "ok"),
            ("a", 2, "color_alter", 0.0, "ok"),
            ("b", 1, "subject_add", None, "unscored"),
            ("b", 2, "color_alter", 0.5, "ok"),
            ("c", 1, "subject_add", None, "not_applicable"),
            ("c", 2, "color_alter", 0.9, "unscored"),  # a value with a non-ok status never counts
        ]
    )
    row = tables.overall(df).iloc[0]
    assert row["mean"] == pytest.approx(0.5)
    assert (row["scored"], row["total"]) == (3, 5)
    assert row["coverage"] == pytest.approx(3 / 5)
    per_turn = tables.by_turn(df).set_index("turn")
    assert per_turn.loc[1, "mean"] == 1.0 and per_turn.loc[1, "coverage"] == pytest.approx(1 / 2)
    assert per_turn.loc[2, "mean"] == pytest.approx(0.25) and per_turn.loc[2, "total"] == 3
    per_task = tables.by_task_type(df).set_index("task_type")
    assert per_task.loc["color_alter", "scored"] == 2
    assert set(tables.by_subset(df)["subset"]) == {"cm"}


def test_bootstrap_resamples_sessions_and_is_seeded():
    # 10 sessions of 10 identical turns: 5 all-pass, 5 all-fail. Resampling turns would give a CI of
    # width ~0.2; resampling sessions gives ~0.6 because a session's turns move together.
    cells = [(f"s{s}", t, "subject_add", float(s < 5), "ok") for s in range(10) for t in range(1, 11)]
    df = table(cells)
    a = tables.overall(df, seed=3).iloc[0]
    b = tables.overall(df, seed=3).iloc[0]
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])
    smooth = df.assign(j_if=np.linspace(0, 1, len(df)))
    c, d = (tables.overall(smooth, seed=s).iloc[0] for s in (3, 4))
    assert (c["ci_low"], c["ci_high"]) != (d["ci_low"], d["ci_high"])
    assert a["ci_low"] < 0.5 < a["ci_high"]
    assert a["ci_high"] - a["ci_low"] > 0.45


def test_ci_is_nan_with_one_session():
    df = table([("a", 1, "subject_add", 1.0, "ok"), ("a", 2, "subject_add", 0.0, "ok")])
    row = tables.overall(df).iloc[0]
    assert row["mean"] == 0.5 and math.isnan(row["ci_low"])


def test_cumulative_success_chain():
    df = table(
        [
            ("a", 1, "subject_add", 1.0, "ok"),
            ("a", 2, "subject_add", 0.0, "ok"),  # fails at 2: fail from here on
            ("a", 3, "subject_add", 1.0, "ok"),
            ("b", 1, "subject_add", 0.75, "ok"),
            ("b", 2, "subject_add", None, "not_applicable"),  # neutral
            ("b", 3, "subject_add", 0.5, "ok"),  # threshold is inclusive
            ("c", 1, "subject_add", None, "unscored"),  # unknown ...
            ("c", 2, "subject_add", 0.0, "ok"),  # ... until a scored failure
            ("d", 1, "subject_add", 1.0, "ok"),
            ("d", 2, "subject_add", None, "not_run"),  # unknown from 2 on
            ("d", 3, "subject_add", 1.0, "ok"),
        ]
    )
    assert tables.cumulative_success(df, threshold=0.5).empty  # no spec says j_if is an IF metric
    out = tables.cumulative_success(df, threshold=0.5, specs=IF_SPEC).set_index("turn")
    assert list(out["metric"].unique()) == ["j_if"]  # role-if metrics picked by default
    assert out.loc[1, "success"] == 1.0 and out.loc[1, "known"] == 3 and out.loc[1, "sessions"] == 4
    assert out.loc[2, "success"] == pytest.approx(1 / 3) and out.loc[2, "known"] == 3  # b pass; a, c fail; d unknown
    assert out.loc[3, "success"] == pytest.approx(1 / 2) and out.loc[3, "sessions"] == 3  # c has no turn 3
    assert out.loc[3, "coverage"] == pytest.approx(2 / 3)
    strict = tables.cumulative_success(df, threshold=0.8, specs=IF_SPEC).set_index("turn")
    assert strict.loc[1, "success"] == pytest.approx(2 / 3)  # b's 0.75 fails now


def test_lower_is_better_metric_passes_below_threshold():
    # direction comes from the spec, not the name: the same column flips with its spec
    df = table([("a", 1, "subject_add", 0.1, "ok"), ("b", 1, "subject_add", 0.2, "ok"),
                ("c", 1, "subject_add", 0.9, "ok")])
    lower = {"j_if": MetricSpec(name="j_if", role="if", higher_is_better=False)}
    assert not tables.higher_is_better("j_if", lower) and tables.higher_is_better("j_if", IF_SPEC)
    low = tables.cumulative_success(df, ["j_if"], threshold=0.5, specs=lower)
    high = tables.cumulative_success(df, ["j_if"], threshold=0.5, specs=IF_SPEC)
    assert low.iloc[0]["success"] == pytest.approx(2 / 3) and high.iloc[0]["success"] == pytest.approx(1 / 3)


def test_session_means_give_back_the_turn_weighted_mean(tmp_path):
    run = open_run(
        make_run(tmp_path, n_sessions=9, subsets=("cm", "cu"), statuses={(0, 1, "scene_if"): ("unscored", "x")})
    )
    means = tables.session_means(run.turns())
    assert list(means.columns[:2]) == ["session_id", "subset"] and len(means) == 9
    assert means.loc[0, "scene_if_n"] == 2
    for m in ("scene_if", "scene_cc"):
        total = (means[m].fillna(0) * means[f"{m}_n"]).sum() / means[f"{m}_n"].sum()
        assert total == pytest.approx(tables.overall(run.turns(), [m]).iloc[0]["mean"])


def test_bad_tables_are_named(tmp_path):
    df = table([("a", 1, "subject_add", 1.0, "ok"), ("a", 1, "subject_add", 1.0, "ok")])
    with pytest.raises(tables.ResultsError, match="turn 1 appears twice"):
        tables.check_turn_table(df)
    with pytest.raises(tables.ResultsError, match="missing column.*task_type"):
        tables.check_turn_table(df.drop(columns="task_type"), where="x.parquet")
    with pytest.raises(tables.ResultsError, match="1-based"):
        tables.check_turn_table(df.assign(turn=[0, 1]))
    with pytest.raises(tables.ResultsError, match="no manifest.json"):
        open_run(tmp_path)
    with pytest.raises(tables.ResultsError, match="metric 'nope'"):
        tables.overall(df.iloc[:1], ["nope"])


def test_summary_prints_every_table(tmp_path):
    run = make_run(tmp_path, n_sessions=8, subsets=("cm", "cu"))
    res = CliRunner().invoke(summary, [str(run), "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    for heading in ("== overall", "== per turn", "== per subset", "== per task type", "cumulative session success"):
        assert heading in res.output
    assert "scene_if" in res.output and "cov 100%" in res.output
    bad = CliRunner().invoke(summary, [str(tmp_path)])
    assert bad.exit_code == 2 and "no manifest.json" in bad.output
