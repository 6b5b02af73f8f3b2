"""Edit-R2 checks that need a CUDA GPU or the real checkpoint (skipped here; run them where available).

    MICEBENCH_BAGEL_WEIGHTS=/models/BAGEL-7B-MoT pytest -q tests/test_edit_r2_device.py
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from edit_r2_tiny import build_tiny_checkpoint  # noqa: E402
from PIL import Image  # noqa: E402

from micebench.editors import create_editor  # noqa: E402
from micebench.spec import EditRequest, Session, Turn  # noqa: E402

TEXTS = ("add a red hat to the cat", "make it blue")


def run_two_turns(options: dict, size: int = 64) -> list:
    ed = create_editor("edit-r2", options)
    turns = tuple(Turn(instruction=t, task_type="subject_add") for t in TEXTS)
    sess = Session(id="dev", suite="tiny", subset="cu", source_image="/x.png", turns=turns)
    src = Image.fromarray((np.random.RandomState(0).rand(size, size, 3) * 255).astype(np.uint8))
    outs, eff, results = [], [], []
    for k in range(2):
        req = EditRequest(session=sess, turn_index=k, source_image=src, history_instructions=TEXTS[:k],
                          history_effective=tuple(eff), history_images=tuple(outs), instruction=TEXTS[k])  # fmt: skip
        r = ed.edit([req])[0]
        assert r.error is None, r.error
        outs.append(r.image)
        eff.append(r.effective_instruction)
        results.append(r)
    ed.close()
    return results


@pytest.mark.gpu
def test_tiny_checkpoint_gpu_fp32_agrees_with_cpu(tmp_path):
    ckpt = build_tiny_checkpoint(tmp_path / "tiny")
    base = {"weights": str(ckpt), "resolution": 64, "steps": 2, "max_think_tokens": 12, "dtype": "float32"}
    cpu = run_two_turns({**base, "device": "cpu"})
    gpu = run_two_turns({**base, "device": "cuda"})
    for c, g in zip(cpu, gpu, strict=True):
        diff = np.abs(np.asarray(c.image, dtype=float) - np.asarray(g.image, dtype=float)) / 255
        assert diff.max() < 0.05, diff.max()


@pytest.mark.gpu
@pytest.mark.checkpoint
def test_real_checkpoint_two_turns():
    weights = os.environ.get("MICEBENCH_BAGEL_WEIGHTS")
    if not weights:
        pytest.skip("set MICEBENCH_BAGEL_WEIGHTS to a BAGEL-7B-MoT folder (or hub id in the local cache)")
    results = run_two_turns({"weights": weights, "resolution": 256, "steps": 10, "max_think_tokens": 200}, size=256)
    assert all(r.image.size == (256, 256) for r in results)
    trace = results[1].extra["ic_cot_trace"]
    assert isinstance(trace, str) and trace.strip()  # the real model writes something
