"""Hugging Face datasets in and out: `export mice` then `--suite hf:` equals the JSONL loader (on the real
MICE metadata with placeholder images made here); `export RUN` round-trips through load_from_disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import MICE_DIR
from PIL import Image

from micebench.cli import main
from micebench.suites.base import SuiteError
from micebench.suites.resolve import load_suite

datasets = pytest.importorskip("datasets")
needs_mice = pytest.mark.skipif(not (MICE_DIR / "cm" / "test_metadata.jsonl").is_file(),
                                reason="the MICE-Bench metadata is not in ../shared/mice-bench")


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory, monkeypatch):
    """datasets' own cache stays inside the test's temporary folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))


@pytest.fixture(scope="module")
def mice_images(tmp_path_factory):
    """A placeholder JPEG for every MICE source image, laid out as <root>/<subset>/source_image/<name>."""
    root = tmp_path_factory.mktemp("mice-images")
    for subset in ("cm", "cu"):
        for i, line in enumerate((MICE_DIR / subset / "test_metadata.jsonl").read_text().splitlines()):
            path = root / subset / json.loads(line)["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([i, len(subset)])
            Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(path, quality=85)
    return root


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@needs_mice
def test_export_mice_then_hf_suite_equals_the_jsonl_loader(mice_images, tmp_path):
    r = CliRunner().invoke(main, ["export", "mice", "-S", f"root={MICE_DIR}", "--image-root", str(mice_images),
                                  "--to", str(tmp_path / "mice-hf")])
    assert r.exit_code == 0, r.output
    assert "wrote 720 rows" in r.output
    jsonl = load_suite("mice", {"root": str(MICE_DIR)}, image_root=mice_images)
    hf = load_suite(f"hf:{tmp_path / 'mice-hf'}")
    assert (hf.name, hf.version, len(hf.sessions)) == (jsonl.name, jsonl.version, 720)
    assert hf.digest() == jsonl.digest()  # so runs on either are comparable on a leaderboard
    for a, b in zip(jsonl.sessions, hf.sessions, strict=True):
        assert a.model_dump(exclude={"source_image"}) == b.model_dump(exclude={"source_image"})
        assert np.array_equal(_pixels(a.source_image), _pixels(b.source_image)), a.id
    flagged = [t for s in hf.sessions for t in s.turns if "invalid" in t.metadata]
    assert len(flagged) == 7  # the cm text_change turns with an empty target, flagged by the same rule


def test_synth_suite_round_trips_with_its_ground_truth(tmp_path):
    """Turn metadata the MICE columns do not hold (the synthetic ground truth) survives the trip."""
    from micebench.export import export_suite

    synth = load_suite("synth", {"n": 1}, seed=3)
    export_suite(synth, tmp_path / "synth-hf")
    back = load_suite(f"hf:{tmp_path / 'synth-hf'}")
    assert back.digest() == synth.digest()
    assert [s.model_dump(exclude={"source_image"}) for s in back.sessions] == \
        [s.model_dump(exclude={"source_image"}) for s in synth.sessions]


@needs_mice
def test_hf_suite_resize_option_matches_the_mice_suites(mice_images, tmp_path):
    """`-S resize=` on hf: gives the same sessions as the same option on the mice suite (default: what the
    rows carry, which for a MICE export is upstream's 512 x 512)."""
    from micebench.images import load_source

    r = CliRunner().invoke(main, ["export", "mice", "-S", f"root={MICE_DIR}", "-S", "subset=cm", "--image-root",
                                  str(mice_images), "--to", str(tmp_path / "cm-hf")])
    assert r.exit_code == 0, r.output
    hf_default = load_suite(f"hf:{tmp_path / 'cm-hf'}")
    assert {tuple(s.metadata["source_resize"]) for s in hf_default.sessions} == {(512, 512)}
    for value, size in (("none", (28, 20)), ("64", (64, 64))):
        jsonl = load_suite("mice", {"root": str(MICE_DIR), "subset": "cm", "resize": value}, image_root=mice_images)
        hf = load_suite(f"hf:{tmp_path / 'cm-hf'}", {"resize": value})
        assert hf.digest() == jsonl.digest(), value
        assert hf.options["resize"] == jsonl.options["resize"]
        assert load_source(hf.sessions[0]).size == size
    with pytest.raises(SuiteError, match="resize='big'"):
        load_suite(f"hf:{tmp_path / 'cm-hf'}", {"resize": "big"})


def _bad_dataset(tmp_path: Path, **changes) -> str:
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    row = {"image": {"bytes": buf.getvalue(), "path": None}, "instruction": ["Add a cat", "Make it red"],
           "task_type": ["subject_add", "color_alter"],
           "formatted_instruction": ["Add [cat]", "Change the color of [cat] to [red]"],
           "bg_consistency": [True, True], "unchanged_objects": [[], []], "all_objects": [["cat"], ["cat"]]}
    rows = [row, {**row, **changes}]
    features = datasets.Features({
        "image": datasets.Image(), "instruction": datasets.Sequence(datasets.Value("string")),
        "task_type": datasets.Sequence(datasets.Value("string")),
        "formatted_instruction": datasets.Sequence(datasets.Value("string")),
        "bg_consistency": datasets.Sequence(datasets.Value("bool")),
        "unchanged_objects": datasets.Sequence(datasets.Sequence(datasets.Value("string"))),
        "all_objects": datasets.Sequence(datasets.Sequence(datasets.Value("string"))),
    })
    ds = datasets.Dataset.from_list(rows, features=features)
    out = tmp_path / "bad"
    ds.save_to_disk(str(out))
    return f"hf:{out}"


def test_bad_rows_get_the_jsonl_loaders_messages_with_the_row(tmp_path):
    spec = _bad_dataset(tmp_path, task_type=["subject_add"])
    with pytest.raises(SuiteError) as e:
        load_suite(spec)
    assert str(e.value) == f"{spec}[train] row 2: field 'task_type' has 1 entries, 'instruction' has 2"
    spec = _bad_dataset(tmp_path / "b", task_type=["subject_add", "paint_it"])
    with pytest.raises(SuiteError, match=r"row 2: field 'task_type'\[1\]: unknown task type 'paint_it'"):
        load_suite(spec)
    # a third-party dataset without session ids still loads: ids come from the image names
    good = load_suite(_bad_dataset(tmp_path / "c"), {"subset": "cu"})
    assert [s.id for s in good.sessions] == ["cu/row-1", "cu/row-2"] and good.sessions[0].subset == "cu"


def test_unreachable_hub_fails_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once, no network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.time()
    r = CliRunner().invoke(main, ["validate", "hf:some-org/not-here"])
    assert r.exit_code == 2
    assert "hf:some-org/not-here: cannot reach http://127.0.0.1:9" in r.output
    assert "not in the local Hugging Face cache" in r.output and len(r.output.strip().splitlines()) == 1
    assert time.time() - started < 15
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = CliRunner().invoke(main, ["validate", "hf:some-org/not-here"])
    assert r.exit_code == 2 and "offline mode is on (HF_HUB_OFFLINE)" in r.output
    r = CliRunner().invoke(main, ["validate", f"hf:{tmp_path / 'nothing'}"])
    assert r.exit_code == 2 and "no such file or folder" in r.output


def test_export_run_round_trips_through_load_from_disk(tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["run", "--suite", "synth", "-S", "n=1", "--model", "synth-drift", "--judge", "scene",
                                  "-q", "--out", str(tmp_path), "--run-name", "r"])
    assert r.exit_code in (0, 1), r.output
    run = tmp_path / "r"
    pushed = {}

    def fake_push(self, repo_id, **kw):
        pushed.update(repo_id=repo_id, rows=self.num_rows, **kw)

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    r = CliRunner().invoke(main, ["export", str(run), "--to", str(tmp_path / "run-hf"), "--push-to-hub", "me/r"])
    assert r.exit_code == 0, r.output
    from micebench.results.run import open_run

    table = open_run(run).turns().drop(columns=["input_path", "output_path"])
    assert list(table.columns[:2]) == ["run_id", "editor"] and (table.run_id == "r").all()
    assert pushed == {"repo_id": "me/r", "rows": len(table), "private": False}
    ds = datasets.load_from_disk(str(tmp_path / "run-hf"))
    back = ds.remove_columns(["input_image", "output_image"]).to_pandas()
    pd.testing.assert_frame_equal(back, table)
    for row in ds:
        stored = _pixels(str(run / "images" / f"{row['input_hash']}.png"))
        assert np.array_equal(np.asarray(row["input_image"].convert("RGB")), stored)
        if row["output_hash"]:
            stored = _pixels(str(run / "images" / f"{row['output_hash']}.png"))
            assert np.array_equal(np.asarray(row["output_image"].convert("RGB")), stored)
        else:
            assert row["output_image"] is None
    assert json.loads(ds.info.description)["manifest"]["run_id"] == "r"
    # a second export to the same folder is refused, the first is kept
    r = CliRunner().invoke(main, ["export", str(run), "--to", str(tmp_path / "run-hf")])
    assert r.exit_code == 2 and "already exists" in r.output
    assert datasets.load_from_disk(str(tmp_path / "run-hf")).num_rows == len(table)
