"""Probe editors for calibrating the benchmark and its judges on the ``synth`` suite.

They are not image editors: they know how synthetic scenes are drawn and render their answers.
Each has a known behaviour, so a judge's scores on them can be checked:

- ``oracle``: returns the ground-truth target of the turn (it reads ``Turn.metadata``).
- ``synth-context``: starts from the source scene graph (``Session.metadata["source"]``, as if it
  perceived the source perfectly) and works out every edit from the raw instructions of the whole
  history: it resolves it/them/there and keeps the turn-1 rule. It never reads the targets.
- ``synth-lastturn``: the same parser, but each instruction is read on its own: pronouns stay
  unresolved (the turn is left undone) and a rule is forgotten after the turn that set it.
- ``synth-drift``: full context like ``synth-context``, but it edits its own previous output image:
  only the changed cells are redrawn and every turn blurs and tints the whole picture a little, so
  the damage compounds (state contamination).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from pydantic import Field

from micebench.editors.base import Editor, EditorConfig
from micebench.spec import EditRequest, EditResult
from micebench.synth import language, scene
from micebench.synth.edits import EditError, apply_edit

LASTTURN_DEFAULT_COLOR = "red"  # what a probe that forgot a colour rule paints an unspecified object


def _source_graph(req: EditRequest) -> dict[str, Any]:
    src = req.session.metadata.get("source")
    if not isinstance(src, dict):
        raise ValueError(f"session {req.session.id}: no synthetic source scene in metadata (not a synth suite?)")
    return src


def replay(source: dict[str, Any], instructions: list[str], context: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Scene states after each instruction, as a probe understands them, and per turn what it did:
    the edit as a bracketed, self-contained instruction, or why it left the scene unchanged.

    With ``context`` the probe resolves pronouns against the previous turn and keeps the rule; without,
    each instruction is read alone. A turn it cannot parse or apply leaves the scene unchanged.
    """
    state, rule = source, None
    referent: list[int] = []
    there: list[int] | None = None
    states, notes = [], []
    for text in instructions:
        try:
            edit, new_rule = language.parse(text, state, referent if context else None, there if context else None)
            turn_rule = new_rule or (rule if context else None)
            if new_rule:
                rule = new_rule
            new_state, touched = apply_edit(state, edit, turn_rule, default_color=LASTTURN_DEFAULT_COLOR)
        except (language.ParseError, EditError) as e:
            states.append(state)
            notes.append(f"left unchanged: {e}")
            referent, there = [], None
            continue
        alive = {o["id"] for o in new_state["objects"]}
        gone = [o for o in state["objects"] if o["id"] not in alive]
        referent = touched if touched else [o["id"] for o in gone]
        there = gone[0]["cell"] if edit["task"] == "subject_remove" and len(gone) == 1 else None
        notes.append(language.formatted(edit, state))
        state = new_state
        states.append(state)
    return states, notes


class OracleEditor(Editor):
    """Returns each turn's ground-truth target image (reads the suite's answer key)."""

    description = "synthetic suite probe: each turn's ground-truth image (the ceiling)"
    needs = ("the synth suite",)

    class Config(EditorConfig):
        """No options."""

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        out = []
        for r in requests:
            target = r.turn.metadata.get("target")
            if not isinstance(target, dict):
                out.append(EditResult(error=f"session {r.session.id}: turn has no synthetic target"))
                continue
            out.append(EditResult(image=scene.render(target), seconds=0.0))
        return out


class _ReplayEditor(Editor):
    context = True

    class Config(EditorConfig):
        """No options."""

    def _states(self, r: EditRequest) -> tuple[list[dict[str, Any]], list[str]]:
        return replay(_source_graph(r), [*r.history_instructions, r.instruction], self.context)

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        out = []
        for r in requests:
            try:
                states, notes = self._states(r)
            except ValueError as e:
                out.append(EditResult(error=str(e)))
                continue
            out.append(EditResult(image=scene.render(states[-1]), seconds=0.0, effective_instruction=notes[-1]))
        return out


class SynthContextEditor(_ReplayEditor):
    """Parses every raw instruction with the full history (pronouns, persistent rule)."""

    context = True
    description = "synthetic suite probe: follows each instruction knowing the whole history"
    needs = ("the synth suite",)


class SynthLastTurnEditor(_ReplayEditor):
    """Parses each raw instruction alone: no pronoun resolution, no memory of the rule."""

    context = False
    description = "synthetic suite probe: reads each instruction alone (no pronouns, no standing rules)"
    needs = ("the synth suite",)


def degrade(img: Image.Image, blur: float, tint: tuple[int, int, int]) -> Image.Image:
    """One turn of drift: a Gaussian blur of ``blur`` px and an additive colour tint."""
    out = img.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else img
    arr = np.asarray(out, dtype=np.int16) + np.asarray(tint, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


class SynthDriftEditor(_ReplayEditor):
    """Full context, but edits its own previous output: changed cells are redrawn, then the whole
    image is blurred and tinted, so unchanged content degrades a little more every turn."""

    context = True
    description = "synthetic suite probe: full context, but blur and tint build up turn after turn"
    needs = ("the synth suite",)

    class Config(EditorConfig):
        blur: float = Field(default=0.5, ge=0, le=5, description="Gaussian blur radius added per turn (px).")
        tint: tuple[int, int, int] = Field(default=(9, 5, -8), description="RGB offset added per turn.")

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        out = []
        for r in requests:
            try:
                states, notes = self._states(r)
            except ValueError as e:
                out.append(EditResult(error=str(e)))
                continue
            before = states[-2] if len(states) > 1 else _source_graph(r)
            after = states[-1]
            fresh = scene.render(after)
            prev = r.previous_image.convert("RGB")
            if prev.size != fresh.size:
                prev = prev.resize(fresh.size, Image.BILINEAR)
            if before["background"] != after["background"]:
                base = fresh
            else:
                arr = np.asarray(prev).copy()
                new = np.asarray(fresh)
                c = scene.cell_size(after)
                cells_b = {tuple(o["cell"]): scene.kind(o) + (o.get("text", ""),) for o in before["objects"]}
                cells_a = {tuple(o["cell"]): scene.kind(o) + (o.get("text", ""),) for o in after["objects"]}
                for rc in set(cells_a) | set(cells_b):
                    if cells_a.get(rc) != cells_b.get(rc):
                        y, x = rc[0] * c, rc[1] * c
                        arr[y : y + c, x : x + c] = new[y : y + c, x : x + c]
                base = Image.fromarray(arr, "RGB")
            out.append(EditResult(image=degrade(base, self.config.blur, self.config.tint), seconds=0.0,
                                  effective_instruction=notes[-1]))
        return out
