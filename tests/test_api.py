"""The Python API: what the CLI does, from Python, with names, module:Class strings, classes or instances;
and the README's notebook example, executed."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

import micebench
from micebench import api
from micebench.judges.pixel import PixelJudge
from micebench.options import OptionsError
from micebench.synth.probes import OracleEditor

SMALL = {"n": 3, "turns": 2}


def test_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- notebook-example -->\n```python\n(.*?)```\n<!-- /notebook-example -->", text, re.S)
    assert match, "README lost its notebook example"
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "README.md:notebook-example", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "| editor |" in out and "scene_if t1" in out and "oracle" in out and "Brighter" in out
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_editors_and_judges_as_names_strings_classes_and_instances(tmp_path):
    runs = api.run("synth", ["oracle", "micebench.synth.probes:SynthDriftEditor", OracleEditor,
                             OracleEditor(OracleEditor.Config())],
                   [("scene", {}), PixelJudge, PixelJudge(PixelJudge.Config(psnr_cap=50))][:2],
                   suite_options=SMALL, out=tmp_path, progress=False)
    assert [r.editor for r in runs] == ["oracle", "synth-drift", "oracle", "oracle"]  # registered names found
    for r in runs:
        assert r.failed_turns == 0 and r.manifest.finished
        assert [j.name for j in r.manifest.judges] == ["scene", "pixel"]
        assert r.turns()["scene_if"].notna().all()
    one = api.run("synth", "identity", [PixelJudge(PixelJudge.Config(psnr_cap=50))],
                  suite_options=SMALL, out=tmp_path, run_name="one", progress=False)
    assert isinstance(one, micebench.Run) and one.run_id == "one"
    assert one.manifest.judges[0].config["psnr_cap"] == 50 and one.turns()["pixel_psnr_src"].max() == 50


def test_defaults_limit_and_option_merging(tmp_path):
    cfg = tmp_path / "judge.yaml"
    cfg.write_text("judge: pixel\npsnr_cap: 30\n")
    run = api.run("synth", "identity", None, suite_options={"n": 5, "turns": 1}, limit=2, out=tmp_path,
                  judge_options={"pixel.psnr_cap": 40}, judge_config_files=[cfg], progress=False)
    assert [j.name for j in run.manifest.judges] == ["scene", "pixel"]  # synth's defaults
    assert run.manifest.judges[1].config["psnr_cap"] == 40  # explicit options win over the file
    assert run.turns()["session_id"].nunique() == 2 and run.manifest.suite.options["limit"] == 2
    bare = api.run("synth", "identity", [], suite_options={"n": 2, "turns": 1}, out=tmp_path, progress=False)
    assert bare.manifest.judges == [] and bare.metric_specs() == {}
    scored = api.score(bare, ["pixel"], progress=False)
    assert "pixel_l1_src" in scored.metric_specs()
    assert api.merge_options({"a": 1, "b": 1}, None, {"b": 2}) == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"editors": None}, "at least one editor"),
        ({"editors": ["oracle", "identity"], "run_name": "x"}, "several editors"),
        ({"editors": "identity", "judges": ["scene", "pixel"], "judge_options": {"votes": 2}}, "several judges"),
        ({"editors": "identity", "judges": [], "judge_options": {"votes": 2}}, "no judges"),
        ({"editors": "identity", "judges": [PixelJudge()], "judge_options": {"psnr_cap": 2}}, "instance"),
        ({"editors": "identity", "editor_options": {"nope": 1}}, "nope"),
    ],
)
def test_api_errors_name_the_problem(tmp_path, kwargs, message):
    with pytest.raises(OptionsError, match=message):
        api.run("synth", suite_options=SMALL, out=tmp_path, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_import_micebench_exposes_the_api_lazily():
    import subprocess
    import sys

    code = ("import sys, micebench; assert 'micebench.api' not in sys.modules; "
            "f = micebench.run; assert 'micebench.api' in sys.modules and 'torch' not in sys.modules; "
            "assert micebench.open_run.__module__ == 'micebench.results.run'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_docstring_example_runs(tmp_path, monkeypatch):
    import micebench.evaluate as ev

    code = "\n".join(line[4:] for line in ev.__doc__.splitlines() if line.startswith("    "))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)
    assert scope["result"].run_dir.parent == __import__("pathlib").Path("runs")
    assert scope["result"].failed_turns == 0 and (tmp_path / scope["result"].run_dir / "turns.parquet").is_file()
