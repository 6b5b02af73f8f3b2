"""The local executor: one editor in this process, batches one after another (micebench's
behaviour before executors existed, and still the default)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any


class LocalExecutor:
    name = "local"

    def setup(self) -> None:
        """Nothing to connect to."""

    def describe(self) -> dict[str, Any]:
        return {"name": "local", "workers": 1}

    def make_editor(self, name: str, options: dict[str, Any], build: Callable[[], Any]):
        """The editor, built here by ``build`` (which also takes an Editor class or instance)."""
        return build()

    def edit_stream(self, runner, sessions: Sequence, records: dict, editor_factory: Callable[[], Any]) -> Iterator:
        """Every session in one lane, in order; the editor is built on the first batch and closed at the end."""
        editor = None

        def get_editor():
            nonlocal editor
            if editor is None:
                editor = editor_factory()
            return editor

        try:
            yield from runner.edit_sessions(sessions, records, get_editor)
        finally:
            if editor is not None:
                from micebench.runner import close_quietly

                close_quietly(editor, f"editor {editor.name or type(editor).__name__}")  # the judges still run

    def judge_stream(self, runner, judge, batches: Sequence[list], records: dict) -> Iterator[tuple[int, list]]:
        for batch in batches:
            yield len(batch), runner._judge_batch(judge, batch, records)

    def close(self) -> None:
        """Nothing to release."""
