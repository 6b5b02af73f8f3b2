"""`micebench list editors`: a one-line description and what each editor needs, without heavy imports."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

from click.testing import CliRunner

from micebench import registry
from micebench.cli import main


def test_every_editor_says_what_it_is_and_what_it_needs():
    infos = {i.name: i for i in registry.describe("editors", detailed=True)}
    for name in ("identity", "replay", "oracle", "synth-context", "synth-lastturn", "synth-drift", "edit-r2", "bagel",
                 "diffusers", "openai-images", "command"):  # fmt: skip
        info = infos[name]
        assert info.description and "\n" not in info.description and len(info.description) <= 120, name
        assert info.needs is not None, f"{name} does not state what it needs"
    assert infos["identity"].needs == ()
    assert "extra diffusers" in infos["diffusers"].needs
    assert any("OPENAI_API_KEY" in n for n in infos["openai-images"].needs)
    assert any("GPU" in n for n in infos["edit-r2"].needs)


def test_plain_describe_still_gives_name_and_target_pairs():
    pairs = dict(registry.describe("editors"))
    assert pairs["diffusers"] == "micebench.editors.diffusers_editor:DiffusersEditor"


def test_list_editors_output_and_no_heavy_imports():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom micebench.cli import main\n"
        "r = CliRunner().invoke(main, ['list', 'editors', '--paths'])\n"
        "assert r.exit_code == 0, r.output\nprint(r.output)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'httpx', 'open_clip') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    line = next(x for x in out.splitlines() if x.startswith("diffusers "))
    assert "FLUX.1 Kontext" in line
    assert "needs: extra diffusers, a GPU for real models, model weights" in out
    assert "needs: nothing beyond micebench" in out  # identity
    assert "from: micebench.editors.command:CommandEditor" in out


def test_a_broken_third_party_adapter_is_listed_with_its_error(monkeypatch):
    eps = dict(registry._entry_points("micebench.editors"))
    eps["broken"] = EntryPoint(name="broken", value="no_such_module_xyz:Editor", group="micebench.editors")
    monkeypatch.setattr(registry, "_entry_points", lambda group: eps)
    r = CliRunner().invoke(main, ["list", "editors"])
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if x.startswith("broken"))
    assert "cannot import: ModuleNotFoundError" in line
    assert "identity" in r.output
