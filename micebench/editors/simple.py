"""Editors that need no model: ``identity`` and ``replay``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from micebench.editors.base import Editor, EditorConfig
from micebench.images import BadImageError, load_image
from micebench.spec import EditRequest, EditResult


class IdentityEditor(Editor):
    """Returns the image it was asked to edit, unchanged: a floor for IF, a ceiling for CC."""

    description = "returns the image it was asked to edit, unchanged: an IF floor, a CC ceiling"
    needs = ()

    class Config(EditorConfig):
        """No options."""

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        return [EditResult(image=r.previous_image.copy(), seconds=0.0) for r in requests]


REPLAY_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


class ReplayEditor(Editor):
    """Reads images an editor made elsewhere, for editors that cannot run inside the harness.

    Layout: ``<root>/<session_id>/turn_<k>.<ext>`` with k = 1, 2, ... and ext one of png, jpg,
    jpeg, webp. An optional ``turn_<k>.txt`` beside it holds the instruction the editor actually
    used. A missing file is an error row for that turn, not a crash.
    """

    description = "reads images an editor made elsewhere: -M root=DIR laid out as DIR/<session_id>/turn_<k>.png"
    needs = ("the images, made elsewhere",)

    class Config(EditorConfig):
        root: Path = Field(description="Folder laid out as <session_id>/turn_<k>.png")

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        return [self._one(r) for r in requests]

    def _one(self, r: EditRequest) -> EditResult:
        root = Path(self.config.root)
        if not root.is_dir():
            return EditResult(error=f"replay: root folder {root} does not exist")
        sid = r.session.id
        folder = (root / sid).resolve()
        if root.resolve() not in folder.parents:
            return EditResult(error=f"replay: session id {sid!r} escapes {root}")
        k = r.turn_index + 1
        for ext in REPLAY_EXTENSIONS:
            path = folder / f"turn_{k}{ext}"
            if path.is_file():
                try:
                    img = load_image(path, f"replay {sid} turn {k}")
                except BadImageError as e:
                    return EditResult(error=str(e))
                txt = folder / f"turn_{k}.txt"
                effective = txt.read_text().strip() if txt.is_file() else None
                return EditResult(image=img, effective_instruction=effective or None)
        return EditResult(error=f"replay: no image for session {sid} turn {k} under {folder} "
                                f"(looked for turn_{k} with {', '.join(REPLAY_EXTENSIONS)})")
