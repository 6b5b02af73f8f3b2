"""The pinned hashes against a real checkout of the authors' repository (skipped without one).

Run with ``MICEBENCH_EDITR2_REPO=/path/to/Edit-R2 pytest tests/test_upstream_real.py``; the checkout must
be at commit 2dd266f3146635bd23e55974a4a75639c60f223d.
"""

from __future__ import annotations

import os

import pytest

from micebench.upstream import ENV_VAR, ITEMS, PINS, UpstreamCheckout, ic_cot_texts, judge_texts

REPO = os.environ.get(ENV_VAR)
pytestmark = pytest.mark.skipif(not REPO, reason=f"${ENV_VAR} is not set (a checkout of the authors' repository)")


def test_every_pinned_hash_matches_the_checkout():
    found = UpstreamCheckout(REPO).pins_found()
    assert set(PINS) == set(ITEMS)
    assert {k: found[k] for k in PINS} == PINS


def test_the_texts_build_from_the_checkout():
    judge = judge_texts(REPO)
    assert "{" not in judge.color("mug", "red") and "mug" in judge.color("mug", "red")
    assert "round one" in judge.ga("cm", ["round one"], ["[round one]"])
    cu = judge.ga("cu", ["make it red"], ["Change the color of [mug] to [red]"])
    assert "make it red" in cu and "[mug]" in cu
    editor = ic_cot_texts(REPO)
    q = editor.question(["  add a mug  "], "  make it red  ", "cu")
    assert "add a mug" in q and "  add a mug" not in q and '"make it red"' in q  # upstream strips both
    assert editor.question(["a"], "b", "cm") != q != editor.question(["a"], "b", "generic")
