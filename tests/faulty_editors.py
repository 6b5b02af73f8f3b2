"""Editors that misbehave on purpose, for runner tests. Used as ``faulty_editors:ClassName``."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from PIL import Image
from pydantic import Field

from micebench.editors.base import Editor, EditorConfig
from micebench.spec import EditResult


class FaultyEditor(Editor):
    """Behaves like identity except on (session id, 1-based turn) pairs listed in ``faults``.

    fault kinds: raise (the whole batch raises), missing (raises ImportError with an install hint),
    none (returns None), empty (0x0 image), hang (sleeps ``hang_seconds``), error (EditResult with an
    error), garbage (a string), i16 (the right pixels as a 16-bit PIL image), f255 (as a float array in
    0..255), fneg (a float array in -1..1), badextra (an ``extra`` JSON cannot hold), exit (calls
    sys.exit(0)), pidhang (writes its pid to ``pid_file``, then hangs), die (ends its process at once).
    """

    class Config(EditorConfig):
        faults: dict[str, str] = Field(default_factory=dict, description='"<session_id>#<turn>" -> kind')
        hang_seconds: float = 5.0
        delay: float = 0.0
        seed: int = 0
        pid_file: str = ""

    def edit(self, requests):
        if self.config.delay:
            time.sleep(self.config.delay)
        out = []
        for r in requests:
            kind = self.config.faults.get(f"{r.session.id}#{r.turn_index + 1}")
            if kind == "raise":
                raise RuntimeError(f"boom on {r.session.id}")
            if kind == "missing":  # what an editor without its extra says, the same for every turn
                raise ImportError("the model needs torch: pip install 'micebench[models]'")
            if kind == "hang":
                time.sleep(self.config.hang_seconds)
            if kind == "exit":
                sys.exit(0)
            if kind == "die":
                os._exit(7)  # as a segfault or the out-of-memory killer would end the process
            if kind == "pidhang":
                with open(self.config.pid_file, "a") as f:
                    f.write(f"{os.getpid()}\n")
                time.sleep(self.config.hang_seconds)
            if kind == "none":
                out.append(None)
            elif kind == "empty":
                out.append(EditResult(image=Image.new("RGB", (0, 0))))
            elif kind == "error":
                out.append(EditResult(error="editor says no"))
            elif kind == "garbage":
                out.append("not an image")
            elif kind == "fneg":
                out.append(EditResult(image=self.expected(r).astype(np.float32) / 127.5 - 1))
            elif kind == "badextra":
                trace: dict = {"step": 1}
                trace["parent"] = trace  # a cycle: JSON cannot hold it
                out.append(EditResult(image=Image.fromarray(self.expected(r)), extra={"trace": trace}))
            elif kind == "i16":
                gray = self.expected(r)[..., 0].astype(np.uint16) * 257
                out.append(EditResult(image=Image.fromarray(gray)))  # mode I;16
            elif kind == "f255":
                out.append(EditResult(image=self.expected(r).astype(np.float64)))
            else:
                # A visible, deterministic change so outputs differ per turn.
                out.append(EditResult(image=Image.fromarray(self.expected(r)),
                                      effective_instruction=r.instruction.upper()))  # fmt: skip
        return out

    @staticmethod
    def expected(r) -> np.ndarray:
        """The uint8 pixels a clean turn returns."""
        arr = np.asarray(r.previous_image).copy()
        arr[: 4 * (r.turn_index + 1), :4] = 255
        return arr


class BrokenEditor(FaultyEditor):
    """Fails outside edit(): in ``where`` (init, describe, close, preflight), by raising or calling sys.exit."""

    class Config(FaultyEditor.Config):
        where: str = "init"
        how: str = "raise"
        marker_file: str = ""  # each construction appends a line (to count them)

    def _fail(self, where: str) -> None:
        if self.config.where == where:
            if self.config.how == "exit":
                sys.exit(3)
            raise RuntimeError(f"broken {where}")

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.marker_file:
            with open(self.config.marker_file, "a") as f:
                f.write(f"built {os.getpid()}\n")
        self._fail("init")

    def preflight(self):
        self._fail("preflight")

    def describe(self):
        self._fail("describe")
        if self.config.where == "describe-unjson":
            return {"weights": object()}
        return super().describe()

    def close(self):
        self._fail("close")
