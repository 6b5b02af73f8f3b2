"""The runner: faulty editors become error rows, later turns are skipped, judges skip them."""

from __future__ import annotations

import pandas as pd
import pytest

from micebench.evaluate import resume_run, score_run, start_run
from micebench.runner import RunSettings
from micebench.store import RunStore
from micebench.suites.resolve import load_suite


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The photos suite with its sources shrunk to 64x64, to keep these tests quick."""
    from PIL import Image

    from micebench.suites.base import SuiteData

    full = load_suite("photos")
    folder = tmp_path_factory.mktemp("small")
    sessions = []
    for s in full.sessions:
        path = folder / f"{s.id}.png"
        Image.open(s.source_image).convert("RGB").resize((64, 64)).save(path)
        sessions.append(s.model_copy(update={"source_image": str(path)}))
    return SuiteData(full.name, full.version, tuple(sessions), full.source)


def _run(photos, tmp_path, faults=None, timeout=None, batch_size=2, judges=(("pixel", {}),), **opts):
    return start_run(photos, "faulty_editors:FaultyEditor", {"faults": faults or {}, **opts}, list(judges),
                     out=tmp_path, run_name="r", settings=RunSettings(batch_size=batch_size, turn_timeout=timeout,
                                                                     progress=False))


def test_clean_run_table(photos, tmp_path):
    res = _run(photos, tmp_path)
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert len(df) == 12 and set(df.status) == {"ok"} and res.failed_turns == 0
    assert (df.groupby("session_id").turn.apply(list) == pd.Series({s: [1, 2, 3] for s in df.session_id})).all()
    # turn t's input is turn t-1's output; every hash names a stored image
    for _, g in df.groupby("session_id"):
        g = g.sort_values("turn")
        assert list(g.input_hash.iloc[1:]) == list(g.output_hash.iloc[:-1])
    for h in set(df.input_hash) | set(df.output_hash):
        assert (res.run_dir / "images" / f"{h}.png").is_file()
    assert (df.effective_instruction == df.instruction.str.upper()).all()
    assert (df.pixel_ssim_src_status == "ok").all() and df.pixel_ssim_src.between(0, 1).all()
    assert (pd.read_csv(res.run_dir / "turns.csv").session_id == df.session_id).all()


@pytest.mark.parametrize("kind", ["raise", "none", "empty", "error", "garbage", "hang"])
def test_faulty_editor_gives_error_rows_and_goes_on(photos, tmp_path, kind):
    res = _run(photos, tmp_path, faults={"chelsea-cu#2": kind}, timeout=0.5 if kind == "hang" else None,
               hang_seconds=3.0)
    df = pd.read_parquet(res.run_dir / "turns.parquet").set_index(["session_id", "turn"])
    bad = df.loc[("chelsea-cu", 2)]
    assert bad.status == "error" and bad.error and bad.output_hash == ""
    assert df.loc[("chelsea-cu", 3)].status == "skipped"
    assert df.loc[("chelsea-cu", 1)].status == "ok"
    # no judge score for failed or skipped turns
    for t in (2, 3):
        assert df.loc[("chelsea-cu", t)].pixel_psnr_src_status == "not_run"
        assert pd.isna(df.loc[("chelsea-cu", t)].pixel_psnr_src)
    others = df.drop(index=[("chelsea-cu", 2), ("chelsea-cu", 3)])
    if kind == "hang":  # a batch times out as a whole: its batch-mate at turn 2 fails too
        assert (others.status == "error").sum() == 1 and (others.status == "skipped").sum() == 1
    else:
        assert (others.status == "ok").all()
    assert res.failed_turns >= 2
    expect = {"raise": "editor raised RuntimeError", "none": "None", "empty": "0x0", "error": "editor says no",
              "garbage": "str", "hang": "timeout"}[kind]
    assert expect in bad.error


def test_judge_failure_is_unscored_not_a_number(photos, tmp_path):
    res = _run(photos, tmp_path, judges=[("faulty_judges:FlakyJudge", {"fail_sessions": ["rocket-cu"]})])
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    rocket = df[df.session_id == "rocket-cu"]
    col = [c for c in df.columns if c.endswith("_brightness")][0]
    assert (rocket[f"{col}_status"] == "unscored").all() and rocket[col].isna().all()
    assert rocket[f"{col}_reason"].str.contains("judge .* failed: ValueError: cannot judge rocket", regex=True).all()
    assert (df[df.session_id != "rocket-cu"][f"{col}_status"] == "ok").all()


def test_score_adds_a_judge_and_resume_skips_done_work(photos, tmp_path):
    res = _run(photos, tmp_path, judges=[])
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert not any(c.endswith("_status") and c != "status" for c in df.columns)
    score_run(res.run_dir, [("pixel", {})], RunSettings(progress=False))
    df2 = pd.read_parquet(res.run_dir / "turns.parquet")
    assert (df2.pixel_l1_src_status == "ok").all()
    # resuming a finished run changes nothing and builds no editor
    before = RunStore.open(res.run_dir).turn_records()
    resume_run(res.run_dir, progress=False)
    assert RunStore.open(res.run_dir).turn_records() == before


def test_resume_redoes_turns_whose_image_vanished(photos, tmp_path):
    res = _run(photos, tmp_path)
    store = RunStore.open(res.run_dir)
    rec = store.turn_records()[("coffee-cm", 1)]
    store.image_path(rec.output_hash).write_bytes(b"")  # as a power cut could leave it
    assert store.repair() == [("coffee-cm", 1), ("coffee-cm", 2)]
    resume_run(res.run_dir, progress=False)
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert (df.status == "ok").all() and (df.pixel_l1_src_status == "ok").all()
    assert store.image_path(rec.output_hash).stat().st_size > 0
