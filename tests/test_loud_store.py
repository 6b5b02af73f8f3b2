"""The run directory under faults: atomic creation, damaged images, finished runs, the umask,
one writer at a time, and read-only places."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from loud_fixtures import env, run, small_photos

from micebench import store as store_mod
from micebench.cli import main
from micebench.evaluate import resume_run
from micebench.store import RunLockedError, RunStore, RunStoreError


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return small_photos(tmp_path_factory.mktemp("photos"), n=2)


def _manifest(name="x"):
    return {"run_id": name, "finished": None}


def test_killed_creation_leaves_nothing_under_the_run_name(suite, tmp_path, monkeypatch):
    def killed(self, manifest):  # as if the process died between the record and the manifest
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunStore, "write_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            RunStore.create(tmp_path / "x", _manifest(), suite.sessions)
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []
    s = RunStore.create(tmp_path / "x", _manifest(), suite.sessions)  # the name is free to use
    s.close()
    assert len(RunStore.open(tmp_path / "x").sessions()) == 2


def test_directory_half_made_by_an_older_version_is_reusable(suite, tmp_path):
    old = tmp_path / "x"
    half = RunStore(old)
    old.mkdir()
    half.images_dir.mkdir()
    half.conn.execute("INSERT INTO sessions VALUES (0, 's', '{}')")
    half.close()  # run.sqlite, empty images/, no manifest.json
    r = CliRunner().invoke(main, ["run", "--resume", str(old)])
    assert r.exit_code == 2 and "interrupted while being created" in r.output and "--run-name" in r.output
    s = RunStore.create(old, _manifest(), suite.sessions)
    s.close()
    assert (old / "manifest.json").is_file() and len(RunStore.open(old).sessions()) == 2


def test_abandoned_temporary_directories_are_swept(suite, tmp_path):
    debris = tmp_path / ".creating-old-abc"
    debris.mkdir()
    (debris / "run.sqlite").write_bytes(b"")
    an_hour_ago = time.time() - 3600
    os.utime(debris, (an_hour_ago, an_hour_ago))
    fresh = tmp_path / ".creating-now-def"  # someone else's creation in progress: left alone
    fresh.mkdir()
    RunStore.create(tmp_path / "x", _manifest(), suite.sessions).close()
    assert not debris.exists() and fresh.exists()


@pytest.mark.parametrize("damage", ["truncate", "other-pixels", "source"])
def test_resume_redoes_turns_whose_image_is_damaged(suite, tmp_path, damage):
    res = run(suite, tmp_path)
    store = RunStore.open(res.run_dir)
    rec = store.turn_records()
    target = rec[("chelsea-cu", 0)].input_hash if damage == "source" else rec[("chelsea-cu", 1)].output_hash
    path = store.image_path(target)
    good = path.read_bytes()
    if damage == "other-pixels":
        path.write_bytes(store.image_path(rec[("astronaut-cm", 1)].output_hash).read_bytes())
    else:
        path.write_bytes(good[: len(good) // 2])  # non-empty, not decodable
    expect = [("chelsea-cu", t) for t in ((0, 1, 2) if damage == "source" else (1, 2))]
    assert store.repair() == expect
    store.close()
    res2 = resume_run(res.run_dir, progress=False)
    assert res2.edit.done == 6 and res2.failed_turns == 0
    assert path.read_bytes() == good
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert (df.status == "ok").all() and (df.pixel_l1_src_status == "ok").all()


def test_resuming_a_finished_run_leaves_its_manifest_alone(suite, tmp_path):
    res = run(suite, tmp_path)
    before = (res.run_dir / "manifest.json").read_bytes()
    time.sleep(1.1)  # `finished` has one-second resolution
    resume_run(res.run_dir, progress=False)
    assert (res.run_dir / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("umask, file_mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(suite, tmp_path, umask, file_mode):
    old = os.umask(umask)
    try:
        res = run(suite, tmp_path, judges=())
    finally:
        os.umask(old)
    dir_mode = file_mode | ((file_mode & 0o444) >> 2)
    assert stat.S_IMODE(res.run_dir.stat().st_mode) == dir_mode
    assert stat.S_IMODE((res.run_dir / "manifest.json").stat().st_mode) == file_mode
    for img in (res.run_dir / "images").iterdir():
        assert stat.S_IMODE(img.stat().st_mode) == file_mode


def test_one_writer_at_a_time_and_the_refusal_names_the_holder(suite, tmp_path):
    res = run(suite, tmp_path, judges=())
    holder = RunStore.open(res.run_dir, write=True, command="micebench run --resume somewhere")
    try:
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on .*micebench run --resume somewhere"):
            RunStore.open(res.run_dir, write=True)
        for args in (["run", "--resume", str(res.run_dir)], ["score", str(res.run_dir), "--judge", "pixel"]):
            r = CliRunner().invoke(main, args)
            assert r.exit_code == 2 and "is in use by pid" in r.output, r.output
        RunStore.open(res.run_dir).turn_records()  # readers are never blocked
    finally:
        holder.close()
    RunStore.open(res.run_dir, write=True).close()  # released


def test_the_lock_dies_with_its_holder(suite, tmp_path):
    res = run(suite, tmp_path, judges=())
    code = ("import sys, time\nfrom micebench.store import RunStore\n"
            "s = RunStore.open(sys.argv[1], write=True, command='holder')\nprint('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(res.run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid} .*holder"):
            RunStore.open(res.run_dir, write=True)
    finally:
        proc.kill()
        proc.wait()
    RunStore.open(res.run_dir, write=True).close()


def test_two_runs_racing_for_one_run_name(suite, tmp_path, monkeypatch):
    publish = store_mod._publish

    def rival_first(tmp, root):  # another process publishes the same name just before us
        monkeypatch.setattr(store_mod, "_publish", publish)
        other = RunStore.create(root, _manifest("rival"), suite.sessions[:1])
        other.close()
        publish(tmp, root)

    monkeypatch.setattr(store_mod, "_publish", rival_first)
    with pytest.raises(RunStoreError, match="created by another process meanwhile"):
        RunStore.create(tmp_path / "x", _manifest("me"), suite.sessions)
    monkeypatch.undo()
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["run_id"] == "rival"
    assert len(RunStore.open(tmp_path / "x").sessions()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # our temporary directory is gone


_READ_ONLY_SCRIPT = """
import os, sys
from click.testing import CliRunner
from micebench.cli import main
ro_out, ro_run, warm = sys.argv[1:4]
# Warm up as the current user (every module a run imports gets imported), then drop to nobody when
# root (root ignores file modes, and nobody cannot read the interpreter's files under /root afterwards).
for args in (["run", "--suite", "photos", "--limit", "1", "--model", "identity", "--judge", "pixel", "--out", warm,
              "--run-name", "w", "-q"], ["run", "--resume", os.path.join(warm, "w"), "-q"]):
    assert CliRunner().invoke(main, args).exit_code == 0
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
for args in (["run", "--suite", "photos", "--limit", "1", "--model", "identity", "--out", ro_out, "-q"],
             ["run", "--resume", ro_run, "-q"]):
    r = CliRunner().invoke(main, args)
    print(r.exit_code, repr(r.output), repr(r.exception))
    if r.exc_info and not isinstance(r.exception, SystemExit):
        import traceback
        traceback.print_exception(*r.exc_info)
"""


def test_read_only_places_exit_2_with_a_message(suite, tmp_path):
    res = run(suite, tmp_path, judges=())
    ro = Path(tempfile.mkdtemp(prefix="micebench-ro-"))
    try:
        (ro / "out").mkdir()
        run_dir = ro / "run"
        os.rename(res.run_dir, run_dir)
        for p in [ro / "out", run_dir, *run_dir.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        ro.chmod(0o755)
        cache = ro / "cache"  # filled by the warm-up, read by nobody afterwards
        cache.mkdir()
        proc = subprocess.run([sys.executable, "-c", _READ_ONLY_SCRIPT, str(ro / "out"), str(run_dir),
                               str(tmp_path / "warm")], capture_output=True, text=True,
                              env=env(MICEBENCH_CACHE=str(cache)))  # fmt: skip
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 2 and not proc.stderr, proc.stdout + proc.stderr
        for line in lines:
            assert line.startswith("2 ") and "cannot write to" in line and "SystemExit(2)" in line, line
        assert str(ro / "out") in lines[0] and str(run_dir) in lines[1]
        assert list((ro / "out").iterdir()) == []
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
