"""The command line as a user meets it: exit codes, messages, no half-made run directories, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from micebench.cli import main


def test_import_and_help_do_not_import_torch():
    code = (
        "import sys, micebench, micebench.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(micebench.cli.main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for cmd in ('run', 'merge', 'export'):\n"
        "    r = CliRunner().invoke(micebench.cli.main, [cmd, '--help'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'open_clip', 'torchvision', 'ray', 'datasets')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_list_shows_builtins():
    r = CliRunner().invoke(main, ["list", "editors"])
    assert r.exit_code == 0 and "identity" in r.output and "replay" in r.output and "edit-r2" in r.output
    r = CliRunner().invoke(main, ["list", "judges"])
    assert "pixel" in r.output and "mice" in r.output


def test_typo_gets_did_you_mean(tmp_path):
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--model", "identiy", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "Did you mean 'identity'" in r.output
    assert not any(tmp_path.iterdir())


def test_bad_editor_option_is_named(tmp_path):
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--model", "replay", "-M", "rooot=x", "--out",
                                  str(tmp_path)])
    assert r.exit_code == 2 and "rooot" in r.output and "root" in r.output
    assert not any(tmp_path.iterdir())


_ROW = {"image": "a.jpg", "instruction": ["Remove the cup"], "task_type": ["subject_remove"],
        "formatted_instruction": ["Remove [cup]"], "bg_consistency": [True], "unchanged_objects": [[]],
        "all_objects": [["cup"]]}


@pytest.mark.parametrize(
    "content, expect",
    [
        ('{"image": "a.jpg"', "test_metadata.jsonl:1: not valid JSON"),
        (json.dumps({k: v for k, v in _ROW.items() if k != "task_type"}), ":1: missing field 'task_type'"),
        (json.dumps({**_ROW, "all_objects": [[], []]}), ":1: field 'all_objects' has 2 entries"),
        (json.dumps({**_ROW, "task_type": ["subject_melt"]}), ":1: field 'task_type'[0]: unknown task type"),
        (json.dumps({**_ROW, "image": "../../x.jpg"}), ":1: field 'image': image path '../../x.jpg' escapes"),
    ],
)
def test_malformed_suite_exit_2_no_run_dir(tmp_path, content, expect):
    d = tmp_path / "suite"
    d.mkdir()
    (d / "test_metadata.jsonl").write_text(content)
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["run", "--suite", str(d), "--model", "identity", "--out", str(out)])
    assert r.exit_code == 2 and expect in r.output
    assert not out.exists()
    r = CliRunner().invoke(main, ["validate", str(d)])
    assert r.exit_code == 2 and expect in r.output


def test_run_exit_code_and_outputs(tmp_path):
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["run", "--suite", "photos", "--model", "identity", "--judge", "pixel", "--limit",
                                  "1", "--out", str(out), "--run-name", "x", "-q"])
    assert r.exit_code == 0, r.output
    run = out / "x"
    m = json.loads((run / "manifest.json").read_text())
    assert m["suite"]["n_sessions"] == 1 and m["editor"]["name"] == "identity" and m["finished"]
    assert m["judges"][0]["name"] == "pixel" and len(m["suite"]["digest"]) == 64
    assert "pixel_ssim_src" in r.output
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    proc = subprocess.run([sys.executable, "-m", "micebench.cli", "run", "--suite", "photos", "--limit", "1",
                           "--model", "faulty_editors:FaultyEditor", "-M", "faults={'astronaut-cm#1': raise}",
                           "--no-judge", "--out", str(out), "-q"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "error 1" in proc.stdout and "skipped 2" in proc.stdout


def test_micebench_warnings_print_as_one_console_line(capsys):
    from micebench.cli import _show_warning

    _show_warning(UserWarning("IC-CoT uses the paraphrase"), UserWarning, str(Path("x/micebench/evaluate.py")), 3)
    _show_warning(DeprecationWarning("old API"), DeprecationWarning, "/lib/other.py", 7)
    err = capsys.readouterr().err
    assert "warning: IC-CoT uses the paraphrase\n" in err
    assert "/lib/other.py:7: DeprecationWarning: old API" in err
