"""Editors that misbehave on purpose, for runner tests. Used as ``faulty_editors:ClassName``."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image
from pydantic import Field

from micebench.editors.base import Editor, EditorConfig
from micebench.spec import EditResult


class FaultyEditor(Editor):
    """Behaves like identity except on (session id, 1-based turn) pairs listed in ``faults``.

    fault kinds: raise (the whole batch raises), missing (raises ImportError with an install hint),
    none (returns None), empty (0x0 image),
    hang (sleeps ``hang_seconds``), error (EditResult with an error), garbage (a string).
    """

    class Config(EditorConfig):
        faults: dict[str, str] = Field(default_factory=dict, description='"<session_id>#<turn>" -> kind')
        hang_seconds: float = 5.0
        delay: float = 0.0
        seed: int = 0

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
            if kind == "none":
                out.append(None)
            elif kind == "empty":
                out.append(EditResult(image=Image.new("RGB", (0, 0))))
            elif kind == "error":
                out.append(EditResult(error="editor says no"))
            elif kind == "garbage":
                out.append("not an image")
            else:
                # A visible, deterministic change so outputs differ per turn.
                arr = np.asarray(r.previous_image).copy()
                arr[: 4 * (r.turn_index + 1), :4] = 255
                out.append(EditResult(image=Image.fromarray(arr), effective_instruction=r.instruction.upper()))
        return out
