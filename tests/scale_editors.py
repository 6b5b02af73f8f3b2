"""Editors for the scale-out tests, importable by Ray workers as ``scale_editors:ClassName``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from micebench.editors.base import Editor, EditorConfig
from micebench.spec import EditResult


class PidEditor(Editor):
    """A slow, deterministic editor that writes its process id to ``pid_dir`` when built, so a test
    can find (and kill) the worker it runs in. Each turn marks a corner whose size depends on the turn."""

    class Config(EditorConfig):
        pid_dir: Path
        delay: float = 0.2

    def __init__(self, config=None) -> None:
        super().__init__(config)
        d = Path(self.config.pid_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{os.getpid()}.pid").write_text(str(time.time()))

    def edit(self, requests):
        time.sleep(self.config.delay)
        out = []
        for r in requests:
            arr = np.asarray(r.previous_image).copy()
            arr[: 3 * (r.turn_index + 1), -5:] = (10 * len(r.history_instructions)) % 256
            out.append(EditResult(image=Image.fromarray(arr), effective_instruction=f"{r.instruction} [pid-free]"))
        return out


class BrokenEditor(Editor):
    """Cannot be built, like an editor whose weights are missing on a worker."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        raise RuntimeError("no weights at /nowhere")

    def edit(self, requests):
        raise AssertionError("never built")
