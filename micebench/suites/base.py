"""The suite protocol: a named, versioned source of validated sessions.

A suite class has a ``Config`` (options given as ``-S key=value``) and a ``load`` method that
returns a :class:`SuiteData`. Register it under the ``micebench.suites`` entry-point group.
Loaders raise :class:`SuiteError` naming the file, line and field of whatever is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from micebench.options import AdapterConfig
from micebench.spec import Session


class SuiteError(ValueError):
    """A suite that cannot be loaded; the message says what is wrong and where."""


class SuiteConfig(AdapterConfig):
    """Options shared by every suite (none yet); subclass to add a suite's own."""


@dataclass(frozen=True)
class SuiteData:
    name: str
    version: str
    sessions: tuple[Session, ...]
    source: str = ""  # where it came from: a file path or "registered:NAME"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The name becomes part of a run directory's name, and ids of file paths: refuse what cannot.
        from micebench.suites.validate import MAX_SUITE_NAME, name_problem

        where = self.source or "suite"
        for what, value in (("suite name", self.name), ("suite version", self.version)):
            why = name_problem(value, MAX_SUITE_NAME) if isinstance(value, str) and value else "is empty"
            if why:
                raise SuiteError(f"{where}: {what} {str(value)[:40]!r} {why}")
        for s in self.sessions:
            why = name_problem(s.id)
            if why:
                raise SuiteError(f"{where}: session id {s.id[:40]!r} {why}")

    def digest(self) -> str:
        """Hash of the suite's content: name, version and every session's content."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.version], sort_keys=True).encode())
        for s in self.sessions:
            h.update(s.digest().encode())
        return h.hexdigest()


class Suite:
    Config: ClassVar[type[SuiteConfig]] = SuiteConfig
    name: ClassVar[str] = ""

    def __init__(self, config: SuiteConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def load(self, image_root: Path | None = None) -> SuiteData:
        raise NotImplementedError(f"{type(self).__name__} must implement load()")


def resolve_inside(base_dirs: list[Path], rel: str, where: str) -> Path:
    """Resolve an image path from a suite, refusing anything that escapes the allowed folders.

    ``rel`` must be relative; it is looked up under each of ``base_dirs`` in order. Absolute
    paths and ``..`` that leave the folder are refused (a suite must not read arbitrary files).
    """
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")):
        raise SuiteError(f"{where}: image path {rel!r} is absolute; paths must be relative to the suite folder")
    for base in base_dirs:
        base_r = base.resolve()
        cand = (base_r / p).resolve()
        if cand != base_r and base_r not in cand.parents:
            raise SuiteError(f"{where}: image path {rel!r} escapes {base}")
    for base in base_dirs:
        cand = (base.resolve() / p).resolve()
        if cand.is_file():
            return cand
    return (base_dirs[0].resolve() / p).resolve()
