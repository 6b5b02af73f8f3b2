"""Shared pytest setup: where the read-only shared data lives, and tiny helpers for run tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICEBENCH_SHARED", ROOT.parent / "shared"))
MICE_DIR = SHARED / "mice-bench"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own cache folder (synthetic images, scikit-image photos)."""
    monkeypatch.setenv("MICEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_collection_modifyitems(config, items):
    gpu = False
    if any("gpu" in item.keywords for item in items):
        try:
            import torch

            gpu = torch.cuda.is_available()
        except ImportError:
            gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none here")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 (pytest-httpserver) for API backends; stopped after the test."""
    from pytest_httpserver import HTTPServer

    s = HTTPServer(host="127.0.0.1", threaded=True)
    s.start()
    yield s
    s.clear()
    if s.is_running():
        s.stop()
