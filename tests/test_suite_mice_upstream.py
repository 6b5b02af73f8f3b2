"""The mice suite on the authors' checkout layout, and the 512 x 512 LANCZOS source resize through a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from micebench.evaluate import start_run
from micebench.images import load_source
from micebench.runner import RunSettings
from micebench.store import RunStore
from micebench.suites.base import SuiteError
from micebench.suites.resolve import load_suite


def line(image: str) -> str:
    return json.dumps({
        "image": image, "instruction": ["Change the color of mug to red", "Remove it"],
        "task_type": ["color_alter", "subject_remove"],
        "formatted_instruction": ["Change the color of [mug] to [red]", "Remove [red mug]"],
        "bg_consistency": [True, False], "unchanged_objects": [["table"], []], "all_objects": [["mug", "table"]] * 2,
    })  # fmt: skip


def write_subsets(folder, size=(100, 60)):
    for k, sub in enumerate(("cm", "cu")):
        (folder / sub / "source_image").mkdir(parents=True)
        img = Image.fromarray((np.random.RandomState(k).rand(size[1], size[0], 3) * 255).astype(np.uint8))
        img.save(folder / sub / "source_image" / f"{k:016x}.jpg", quality=90)
        (folder / sub / "test_metadata.jsonl").write_text(line(f"source_image/{k:016x}.jpg"))
    return folder


def test_root_is_the_checkout_or_a_folder_with_cm_and_cu(tmp_path):
    checkout = tmp_path / "Edit-R2"
    write_subsets(checkout / "dataset")
    a = load_suite("mice", {"root": str(checkout)})
    b = load_suite("mice", {"root": str(checkout / "dataset")})
    assert [s.id for s in a.sessions] == [s.id for s in b.sessions] == ["cm/0000000000000000", "cu/0000000000000001"]
    assert a.source == str(checkout / "dataset")
    with pytest.raises(SuiteError, match="dataset/"):
        load_suite("mice", {"root": str(tmp_path)})


def test_resize_is_on_by_default_recorded_and_can_be_turned_off(tmp_path):
    write_subsets(tmp_path)
    on = load_suite("mice", {"root": str(tmp_path)})
    assert on.options == {"subset": "both", "resize": 512, "source_size": [512, 512], "resample": "lanczos"}
    assert all(s.metadata["source_resize"] == [512, 512] for s in on.sessions)
    off = load_suite("mice", {"root": str(tmp_path), "resize": "none"})
    assert off.options["resize"] == "none" and all("source_resize" not in s.metadata for s in off.sessions)
    assert on.digest() != off.digest()  # another input, another suite
    src = Image.open(on.sessions[0].source_image).convert("RGB")
    want = src.resize((512, 512), Image.LANCZOS)
    assert np.array_equal(np.asarray(load_source(on.sessions[0])), np.asarray(want))
    assert load_source(off.sessions[0]).size == (100, 60)
    assert load_suite("mice", {"root": str(tmp_path), "resize": 64}).sessions[0].metadata["source_resize"] == [64, 64]


@pytest.mark.parametrize("resize, size", [(None, (512, 512)), ("none", (100, 60))])
def test_the_stored_source_of_a_run_is_the_resized_image(tmp_path, resize, size):
    write_subsets(tmp_path / "data")
    opts = {"root": str(tmp_path / "data"), "subset": "cu", **({"resize": resize} if resize else {})}
    suite = load_suite("mice", opts)
    result = start_run(suite, "identity", {}, [("pixel", {})], out=tmp_path / "runs",
                       settings=RunSettings(batch_size=2, progress=False))  # fmt: skip
    store = RunStore.open(result.run_dir)
    rec = store.turn_records()[("cu/0000000000000001", 0)]
    assert store.get_image(rec.input_hash).size == size
    assert store.get_image(rec.output_hash).size == size  # the identity editor saw the resized source
    assert store.read_manifest()["suite"]["options"]["resize"] == (512 if resize is None else "none")
    store.close()
