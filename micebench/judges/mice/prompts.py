"""Prompt templates of the mice judge: files under ``judges/prompts/``, hashed as a set.

Templates are plain text with ``{field}`` placeholders (``str.format``). The hash covers every
template's name and bytes, so any wording change gives judgements a new ``prompt_hash`` and
invalidates cached votes.

Where the templates are found: an explicit ``prompts_dir``, else ``judges/prompts`` at the root of
the repository that holds this package (an editable install: ``pip install -e .``). A wheel
install does not carry ``judges/``; such users pass ``prompts_dir`` (or a profile that sets it).
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

REQUIRED: dict[str, set[str]] = {
    "if_add_check": {"instruction"},
    "if_replace_check": {"instruction"},
    "if_color": {"object", "color"},
    "if_material": {"object", "material"},
    "if_text_read": set(),
    "if_background": {"background"},
    "ga_cm": {"n_images", "rule", "rounds"},
    "ga_cu": {"n_images", "rounds"},
}


def repo_root() -> Path:
    """The directory above the ``micebench`` package (the repository root in an editable install)."""
    return Path(__file__).resolve().parents[3]


def default_prompts_dir() -> Path:
    return repo_root() / "judges" / "prompts"


class PromptError(ValueError):
    """Missing or malformed prompt templates."""


@dataclass(frozen=True)
class PromptSet:
    templates: dict[str, str]
    hash: str
    where: str

    def render(self, name: str, **fields: object) -> str:
        return self.templates[name].format(**fields)


def load_prompts(directory: str | Path | None = None) -> PromptSet:
    """Read and check every required template; error messages name the file and the problem."""
    d = Path(directory) if directory else default_prompts_dir()
    if not d.is_dir():
        raise PromptError(
            f"prompt templates not found: {d} is not a directory. In a non-editable install pass "
            "prompts_dir=<path to judges/prompts> (the templates ship in the repository, not the wheel)."
        )
    templates: dict[str, str] = {}
    digest = hashlib.sha256()
    for name, needed in sorted(REQUIRED.items()):
        path = d / f"{name}.txt"
        if not path.is_file():
            raise PromptError(f"prompt template {path} is missing")
        text = path.read_text(encoding="utf-8")
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        if used != needed:
            raise PromptError(f"{path}: placeholders {sorted(used)}; expected exactly {sorted(needed)}")
        templates[name] = text
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return PromptSet(templates=templates, hash=digest.hexdigest()[:16], where=str(d))
