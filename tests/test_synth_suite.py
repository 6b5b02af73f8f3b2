"""The synth suite: determinism, coverage of the nine task types, options, and the instruction parser."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from micebench.images import load_image
from micebench.options import OptionsError, build_config
from micebench.spec import TASK_TYPES
from micebench.synth import language, probes, scene
from micebench.synth.suite import SynthSuite


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MICEBENCH_CACHE", str(tmp_path / "cache"))


def _digest(data) -> str:
    h = hashlib.sha256()
    for s in data.sessions:
        h.update(json.dumps(s.model_dump(mode="json", exclude={"source_image"}), sort_keys=True).encode())
        # pixels, not PNG bytes: the zlib inside Pillow may compress differently on another machine
        h.update(load_image(s.source_image).tobytes())
        for t in s.turns:
            h.update(scene.render(t.metadata["target"]).tobytes())
    return h.hexdigest()


# Pinned: a change here means every synth number changes; bump GENERATOR_VERSION when it is intended.
GOLDEN = "2ecc6b5e4ca9e6fe4fe497c3be4473ebc8ad820c06eabeb35631a2a2327e4a67"


def test_same_seed_gives_byte_identical_specs_and_images(tmp_path, monkeypatch):
    cfg = SynthSuite.Config(n=3, turns=3)
    a = _digest(SynthSuite(cfg).load())
    monkeypatch.setenv("MICEBENCH_CACHE", str(tmp_path / "other"))
    b = _digest(SynthSuite(cfg).load())
    assert a == b
    assert a == GOLDEN
    c = _digest(SynthSuite(SynthSuite.Config(n=3, turns=3, seed=1)).load())
    assert c != a


def test_all_nine_task_types_in_both_subsets():
    data = SynthSuite(SynthSuite.Config(n=20)).load()
    for sub in ("cm", "cu"):
        seen = {t.task_type for s in data.sessions if s.subset == sub for t in s.turns}
        assert seen == set(TASK_TYPES), (sub, set(TASK_TYPES) - seen)


def test_sessions_follow_mice_conventions():
    data = SynthSuite(SynthSuite.Config(n=10, turns=4)).load()
    for s in data.sessions:
        assert Path(s.source_image).is_file() and s.subset in ("cm", "cu")
        assert len(s.turns) == 4
        for t in s.turns:
            assert "[" in t.formatted_instruction and t.metadata["target"]["objects"] is not None
            json.dumps(t.metadata)
        if s.subset == "cm":
            assert "With this rule active," in s.turns[0].instruction
            assert "rule" not in s.turns[0].formatted_instruction
    cu_later = [t for s in data.sessions if s.subset == "cu" for t in s.turns[1:]]
    with_pronoun = [t for t in cu_later if language.PRONOUN.search(t.instruction.lower())]
    assert len(with_pronoun) >= 0.4 * len(cu_later)


def test_long_sessions_and_options():
    data = SynthSuite(SynthSuite.Config(n=4, turns=10, subset="cu", size=128)).load()
    assert len(data.sessions) == 4 and all(len(s.turns) == 10 for s in data.sessions)
    assert all(s.subset == "cu" for s in data.sessions)
    with pytest.raises(OptionsError, match="subset"):
        build_config(SynthSuite.Config, {"subset": "xx"}, where="suite 'synth'")
    with pytest.raises(OptionsError, match="multiple of 4"):
        build_config(SynthSuite.Config, {"size": 250}, where="suite 'synth'")


def test_parser_recovers_every_generated_edit():
    data = SynthSuite(SynthSuite.Config(n=30, turns=5)).load()
    for s in data.sessions:
        states, notes = probes.replay(s.metadata["source"], [t.instruction for t in s.turns], context=True)
        for k, (st, t) in enumerate(zip(states, s.turns, strict=True)):
            assert st == t.metadata["target"], (s.id, k + 1, t.instruction, notes[k])


def test_parser_refuses_unresolved_pronouns():
    g = {"size": 256, "grid": 4, "background": "grey", "next_id": 2,
         "objects": [{"id": 1, "shape": "circle", "color": "red", "material": "plain", "cell": [0, 0], "text": ""}]}
    with pytest.raises(language.ParseError, match="pronoun"):
        language.parse("Paint it blue", g)
    edit, rule = language.parse("Paint it blue", g, referent=[1])
    assert edit == {"task": "color_alter", "target": ["circle", "red", "plain"], "color": "blue"} and rule is None
