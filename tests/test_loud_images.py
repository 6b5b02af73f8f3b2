"""Editor outputs in wide modes and dtypes are converted by their range or refused by name, never
silently turned all white or all black."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from loud_fixtures import run, small_photos
from PIL import Image

from micebench.images import BadImageError, as_rgb_image
from micebench.store import RunStore


def _px(img) -> tuple:
    return as_rgb_image(img).getpixel((0, 0))


def test_wide_pil_modes_are_scaled_by_range():
    assert _px(Image.fromarray(np.full((3, 3), 40000, np.uint16))) == (156, 156, 156)  # I;16: 40000/65535
    assert _px(Image.fromarray(np.full((3, 3), 0.5, np.float32))) == (128, 128, 128)  # F in 0..1
    assert _px(Image.fromarray(np.full((3, 3), 200.0, np.float32))) == (200, 200, 200)  # F in 0..255
    assert _px(Image.fromarray(np.full((3, 3), 77, np.int32))) == (77, 77, 77)  # I holding 8-bit values
    assert _px(Image.fromarray(np.full((3, 3), 3000, np.int32))) == (12, 12, 12)  # I holding 16-bit values


def test_arrays_are_scaled_by_range():
    assert _px(np.full((3, 3, 3), 200.0)) == (200, 200, 200)  # float64 in 0..255 (was clipped to white)
    assert _px(np.full((3, 3, 3), 0.25)) == (64, 64, 64)
    assert _px(np.full((3, 3, 3), 65535, np.uint16)) == (255, 255, 255)
    assert _px(np.full((3, 3), 9, np.int64)) == (9, 9, 9)
    assert _px(np.ones((3, 3), bool)) == (255, 255, 255)


@pytest.mark.parametrize("obj, words", [
    (np.full((3, 3, 3), -0.5), ["float64", "-0.5", "0..1 or 0..255", "(x + 1) / 2"]),
    (np.full((3, 3, 3), 300.0, np.float32), ["float32", "300", "0..1 or 0..255"]),
    (np.array([[np.nan, 0.0]]), ["non-finite"]),
    (np.full((2, 2), -4, np.int16), ["int16", "-4"]),
    (Image.fromarray(np.full((3, 3), -2.0, np.float32)), ["PIL mode F", "-2"]),
])  # fmt: skip
def test_out_of_range_is_refused_naming_dtype_and_range(obj, words):
    with pytest.raises(BadImageError) as e:
        as_rgb_image(obj, "editor output")
    assert all(w in str(e.value) for w in words), str(e.value)


def test_run_stores_converted_pixels_and_refuses_ambiguous_ones(tmp_path):
    suite = small_photos(tmp_path, n=3)
    faults = {"astronaut-cm#1": "i16", "chelsea-cu#1": "f255", "coffee-cm#1": "fneg"}
    res = run(suite, tmp_path / "runs", options={"faults": faults}, judges=())
    store = RunStore.open(res.run_dir)
    rec = store.turn_records()
    for sid, gray in (("astronaut-cm", True), ("chelsea-cu", False)):
        r = rec[(sid, 0)]
        src = np.asarray(store.get_image(r.input_hash))
        want = src.copy()
        want[:4, :4] = 255
        if gray:
            want = np.repeat(want[..., :1], 3, axis=2)
        assert r.status == "ok"
        assert np.array_equal(np.asarray(store.get_image(r.output_hash)), want)
    bad = rec[("coffee-cm", 0)]
    assert bad.status == "error" and "float32" in bad.error and "values from -1" in bad.error
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert (df[df.session_id == "coffee-cm"].status.tolist()) == ["error", "skipped", "skipped"]
