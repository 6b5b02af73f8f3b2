"""TransformersQwenVLM on a tiny random Qwen2.5-VL saved with save_pretrained and loaded by path."""

from __future__ import annotations

import pytest
from judge_fixtures import save_tiny_qwen25vl, solid

from micebench.judges.backends.vlm import TransformersQwenVLM


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return TransformersQwenVLM(str(save_tiny_qwen25vl(tmp_path_factory.mktemp("qwen"))), "cpu", seed=7)


def test_generates_reproducibly_per_vote(qwen):
    images = [solid("src", 64), solid("out1", 56)]
    a = qwen.ask(images, "Is the mug red?", temperature=0.6, max_tokens=6, vote=0)
    b = qwen.ask(images, "Is the mug red?", temperature=0.6, max_tokens=6, vote=0)
    c = qwen.ask(images, "Is the mug red?", temperature=0.6, max_tokens=6, vote=1)
    assert a == b and isinstance(a.text, str)
    assert a.finish_reason in ("stop", "length") and not a.cached
    assert c.text != a.text or c.finish_reason != a.finish_reason


def test_greedy_and_single_image(qwen):
    r1 = qwen.ask([solid("out1", 64)], "Transcribe the text.", temperature=0.0, max_tokens=3, vote=0)
    r2 = qwen.ask([solid("out1", 64)], "Transcribe the text.", temperature=0.0, max_tokens=3, vote=5)
    assert r1 == r2  # greedy ignores the vote seed
    assert r1.finish_reason == "length" or r1.finish_reason == "stop"
