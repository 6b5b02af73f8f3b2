"""The replay editor reads images made elsewhere; gaps become error rows, not crashes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from micebench.evaluate import start_run
from micebench.images import image_hash
from micebench.runner import RunSettings
from micebench.suites.resolve import load_suite


def test_replay_reads_layout_and_reports_gaps(tmp_path):
    suite = load_suite("photos")
    root = tmp_path / "made"
    expected = {}
    for i, s in enumerate(suite.sessions):
        (root / s.id).mkdir(parents=True)
        for k in (1, 2, 3):
            if s.id == "coffee-cm" and k == 2:
                continue  # a gap
            img = Image.fromarray(np.full((16, 16, 3), 10 * i + k, dtype=np.uint8))
            ext = "jpg" if k == 3 else "png"
            img.save(root / s.id / f"turn_{k}.{ext}", quality=100)
            expected[(s.id, k)] = image_hash(Image.open(root / s.id / f"turn_{k}.{ext}").convert("RGB"))
    (root / "chelsea-cu" / "turn_2.txt").write_text("Change the color of the black cat to white")
    res = start_run(suite, "replay", {"root": str(root)}, [], out=tmp_path / "runs", run_name="r",
                    settings=RunSettings(progress=False))
    df = pd.read_parquet(res.run_dir / "turns.parquet").set_index(["session_id", "turn"])
    assert df.loc[("coffee-cm", 2)].status == "error" and "no image" in df.loc[("coffee-cm", 2)].error
    assert df.loc[("coffee-cm", 3)].status == "skipped"
    for (sid, k), h in expected.items():
        if sid != "coffee-cm" or k == 1:
            assert df.loc[(sid, k)].output_hash == h
    assert df.loc[("chelsea-cu", 2)].effective_instruction == "Change the color of the black cat to white"
    assert df.loc[("chelsea-cu", 3)].effective_instruction == df.loc[("chelsea-cu", 3)].instruction
