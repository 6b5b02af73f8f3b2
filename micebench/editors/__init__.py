"""Editors: adapters that produce one image per turn from the whole session history."""

from micebench.editors.base import Editor, EditorConfig, create_editor

__all__ = ["Editor", "EditorConfig", "create_editor"]
