"""Helpers of the tests/test_loud_*.py files: a small photos suite and one-call runs."""

from __future__ import annotations

import os
from pathlib import Path

from micebench.evaluate import start_run
from micebench.runner import RunSettings
from micebench.suites.base import SuiteData

TESTS = Path(__file__).resolve().parent
FAULTY = "faulty_editors:FaultyEditor"


def small_photos(folder: Path, n: int | None = None, size: int = 48) -> SuiteData:
    """The photos suite (4 sessions x 3 turns) with sources shrunk to ``size`` pixels."""
    from PIL import Image

    from micebench.suites.resolve import load_suite

    full = load_suite("photos")
    sessions = []
    for s in full.sessions[:n]:
        path = folder / f"{s.id}.png"
        if not path.exists():
            Image.open(s.source_image).convert("RGB").resize((size, size)).save(path)
        sessions.append(s.model_copy(update={"source_image": str(path)}))
    return SuiteData(full.name, full.version, tuple(sessions), full.source)


def run(suite: SuiteData, out: Path, editor: str = FAULTY, options: dict | None = None, judges=(("pixel", {}),),
        name: str = "r", **settings):
    settings.setdefault("progress", False)
    return start_run(suite, editor, dict(options or {}), list(judges), out=out, run_name=name,
                     settings=RunSettings(**settings))


def env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that imports the test adapters (faulty_editors, faulty_judges)."""
    return {**os.environ, "PYTHONPATH": str(TESTS), **extra}
