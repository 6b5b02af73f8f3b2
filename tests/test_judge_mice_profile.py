"""Profiles, entry point, prompt lookup and the resumable vote cache of the mice judge."""

from __future__ import annotations

import pytest
from judge_fixtures import FakeDetector, FakeVLM, request, session, turn

from micebench.judges.base import create_judge
from micebench.judges.mice.judge import MiceConfig, MiceJudge
from micebench.judges.mice.prompts import PromptError, default_prompts_dir, load_prompts
from micebench.options import OptionsError


def test_shipped_profile_loads_through_the_registry_and_options_win():
    j = create_judge("mice", {"profile": "judges/qwen25vl-32b-vllm.yaml", "votes": 2})
    assert isinstance(j, MiceJudge)
    c = j.config
    assert c.model == "Qwen/Qwen2.5-VL-32B-Instruct" and c.temperature == 0.6 and c.votes == 2
    assert c.base_url_env == "MICEBENCH_VLM_BASE_URL" and c.detector_path == "IDEA-Research/grounding-dino-tiny"
    assert j.metric_names == ("if", "cc", "ga") and j.describe()["prompt_hash"] == j.prompt_hash
    # a bare profile name resolves under judges/
    assert create_judge("mice", {"profile": "qwen25vl-32b-vllm"}).config.votes == 4


def test_defaults_match_the_protocol():
    c = MiceConfig()
    assert (c.votes, c.temperature, c.max_tokens, c.yes_match) == (4, 0.6, 1024, "leading")


def test_bad_profile_and_bad_options_name_the_problem(tmp_path):
    with pytest.raises(OptionsError, match="not found"):
        create_judge("mice", {"profile": "judges/nope.yaml"})
    bad = tmp_path / "p.yaml"
    bad.write_text("votes: 2\nvotez: 3\n")
    with pytest.raises(OptionsError, match="votez"):
        create_judge("mice", {"profile": str(bad)})


def test_missing_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MICEBENCH_VLM_BASE_URL", raising=False)
    j = MiceJudge(MiceConfig(cache_path="none"), detector=FakeDetector({}))
    t = turn("color_alter", "Change the color of [mug] to [red]")
    with pytest.raises(OptionsError, match="MICEBENCH_VLM_BASE_URL"):
        j.score([request(session([t], "cu"), 0)])


def test_prompts_are_found_in_the_repo_and_checked(tmp_path):
    assert default_prompts_dir().is_dir()
    p = load_prompts()
    for name in ("if_color", "ga_cm"):
        (tmp_path / f"{name}.txt").write_text(p.templates[name])
    with pytest.raises(PromptError, match="missing"):
        load_prompts(tmp_path)
    for name, text in p.templates.items():
        (tmp_path / f"{name}.txt").write_text(text)
    assert load_prompts(tmp_path).hash == p.hash
    (tmp_path / "if_color.txt").write_text(p.templates["if_color"] + " Consider {lighting}.")
    with pytest.raises(PromptError, match="lighting"):
        load_prompts(tmp_path)


def test_interrupted_run_resumes_without_asking_again(tmp_path):
    turns = [turn("color_alter", "Change the color of [mug] to [red]"),
             turn("color_alter", "Change the color of [mug] to [blue]")]  # fmt: skip
    reqs = [request(session([t], "cu", sid=f"s{i}"), 0) for i, t in enumerate(turns)]
    cfg = MiceConfig(cache_path=str(tmp_path / "c.sqlite"), votes=3)

    def flaky(prompt, images, vote):  # vote 2 fails on the first run only
        if vote == 2 and "FINAL" not in prompt:
            from micebench.judges.backends.vlm import VLMError

            raise VLMError("interrupted")
        return "FINAL: yes" if "FINAL" in prompt else "yes"

    first = FakeVLM(flaky)
    j1 = MiceJudge(cfg, detector=FakeDetector({}), vlm=first)
    rows1 = j1.score(reqs)
    j1.close()
    assert [r[0].votes for r in rows1] == [(1.0, 1.0, None)] * 2
    second = FakeVLM(lambda p, i, v: "FINAL: yes" if "FINAL" in p else "no")
    j2 = MiceJudge(cfg, detector=FakeDetector({}), vlm=second)
    rows2 = j2.score(reqs)
    # only the failed IF votes were asked again; the cached ones come back as they were
    assert sorted((c[2], "FINAL" in c[0]) for c in second.calls) == [(2, False), (2, False)]
    assert [r[0].votes for r in rows2] == [(1.0, 1.0, 0.0)] * 2
    assert rows2[0][2].votes == (1.0, 1.0, 1.0)
    # a different prompt wording (new hash) is a different cache entry
    j2.prompts = type(j2.prompts)(templates=j2.prompts.templates, hash="other", where="x")
    third = FakeVLM("yes")
    j2._vlm = third
    j2.score(reqs[:1])
    assert any(c[2] == 0 for c in third.calls)
    j2.close()
