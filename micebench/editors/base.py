"""The editor protocol.

An editor is a class with a ``Config`` (an :class:`EditorConfig` subclass) and one method,
:meth:`Editor.edit`, which takes a batch of :class:`EditRequest` and returns one
:class:`EditResult` per request, in order. Register it under the ``micebench.editors``
entry-point group::

    [project.entry-points."micebench.editors"]
    my-editor = "my_package.editor:MyEditor"

An editor may raise for a whole batch; the runner then records an error row for every turn of
the batch and goes on. To fail one request only, return ``EditResult(error=...)`` for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from micebench import registry
from micebench.options import AdapterConfig, build_config
from micebench.spec import EditRequest, EditResult


class EditorConfig(AdapterConfig):
    """Options shared by every editor (none yet); subclass to add an adapter's own."""


class Editor:
    """Base class of editors. Subclasses set ``Config`` and implement :meth:`edit`."""

    Config: ClassVar[type[EditorConfig]] = EditorConfig
    name: ClassVar[str] = ""
    # Shown by `micebench list editors`: one line on what it is, and what it needs to run
    # (extras, a GPU, weights, a key; () for nothing, None for not stated). Without a description
    # the docstring's first line is shown.
    description: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: EditorConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        raise NotImplementedError(f"{type(self).__name__} must implement edit()")

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this editor."""
        return {"name": self.name or type(self).__name__, "config": self.config.model_dump(mode="json")}

    def close(self) -> None:
        """Free resources (GPU memory) before the judge phase."""


def create_editor(name: str, options: dict[str, Any] | None = None) -> Editor:
    """Look up an editor by name and build it with validated options."""
    cls = registry.load("editors", name)
    config = build_config(cls.Config, options or {}, where=f"editor {name!r}")
    editor = cls(config)
    editor.name = name
    return editor
