"""micebench doctor: the environment checks and what every registered adapter needs."""

from __future__ import annotations

from click.testing import CliRunner

from micebench import registry
from micebench.cli import main


def test_doctor_checks_the_machine_and_lists_every_adapter(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = CliRunner().invoke(main, ["doctor", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    for section in ("Python and packages", "torch and CUDA", "Disk", "Hugging Face Hub", "Chromium", "Editors"):
        assert section in r.output
    assert "offline (HF_HUB_OFFLINE is set)" in r.output and f"{tmp_path}:" in r.output
    for kind in ("editors", "judges"):
        for name in registry.names(kind):
            assert f"{kind[:-1]} {name}:" in r.output
    assert "judge clip: packages torch, open_clip" in r.output and "-J checkpoint=FILE" in r.output
    assert "editor edit-r2: packages torch, safetensors" in r.output and "-M weights=DIR" in r.output
    assert "editor replay: the images, made elsewhere" in r.output  # no requirements(): its declared needs
    assert "editor identity: nothing beyond micebench" in r.output


def test_doctor_tolerates_adapters_that_break(monkeypatch):
    class Odd:
        @classmethod
        def requirements(cls):
            raise RuntimeError("no idea")

    class Listed:
        requirements = staticmethod(lambda: ["a GPU with 80 GB", "the moon"])

    class NeedsMissing:
        requirements = staticmethod(lambda: {"packages": ["no_such_module_xyz"], "extra": "models"})

    rows = {"editors": [("odd", "x:Odd"), ("listed", "x:Listed", "one-line description"),
                        {"name": "needy", "target": "x:NeedsMissing"}, ("gone", "nowhere:Thing")], "judges": []}
    found = {"odd": Odd, "listed": Listed, "needy": NeedsMissing}

    def load(kind, name):
        if name not in found:
            raise registry.UnknownNameError(f"cannot import 'nowhere' (from {name!r})")
        return found[name]

    monkeypatch.setattr(registry, "describe", lambda kind: rows[kind])
    monkeypatch.setattr(registry, "load", load)
    r = CliRunner().invoke(main, ["doctor"])
    assert r.exit_code == 1 and "1 check(s) failed" in r.output
    assert "editor odd: requirements() raised RuntimeError: no idea" in r.output
    assert "editor listed: a GPU with 80 GB; the moon" in r.output
    assert "missing  editor needy: packages no_such_module_xyz; missing: no_such_module_xyz (pip install" in r.output
    assert "FAIL     editor gone: cannot be imported from nowhere:Thing" in r.output


def test_doctor_reads_declared_needs_and_flags_a_missing_extra(monkeypatch):
    from micebench import cli_doctor

    class Declared:
        needs = ("extra diffusers", "a GPU for real models")

    class Nothing:
        needs = ()

    rows = {"editors": [("declared", "x:Declared"), ("nothing", "x:Nothing")], "judges": []}
    monkeypatch.setattr(registry, "describe", lambda kind: rows[kind])
    monkeypatch.setattr(registry, "load", lambda kind, name: {"declared": Declared, "nothing": Nothing}[name])
    monkeypatch.setitem(cli_doctor.EXTRA_MODULES, "diffusers", "no_such_module_xyz")
    r = CliRunner().invoke(main, ["doctor"])
    assert "missing  editor declared: extra diffusers; missing: no_such_module_xyz (pip install " \
           "'micebench[diffusers]'); a GPU for real models" in r.output
    assert "editor nothing: nothing beyond micebench" in r.output
