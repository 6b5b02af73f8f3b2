"""A lazy registry of adapters, fed by Python entry points.

Built-in adapters are declared in pyproject.toml under the same entry-point groups as
third-party ones (``micebench.editors``, ``micebench.judges``, ``micebench.suites``), so there
is one way in. Nothing is imported until a name is looked up.
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUPS = {"editors": "micebench.editors", "judges": "micebench.judges", "suites": "micebench.suites"}


class UnknownNameError(LookupError):
    """A name that no installed adapter provides."""


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def names(kind: str) -> list[str]:
    """Every registered name of a kind (``editors``, ``judges`` or ``suites``), sorted."""
    return sorted(_entry_points(GROUPS[kind]))


def describe(kind: str) -> list[tuple[str, str]]:
    """(name, "module:attr") pairs, without importing anything."""
    return [(n, ep.value) for n, ep in sorted(_entry_points(GROUPS[kind]).items())]


def load(kind: str, name: str) -> Any:
    """Import and return the object registered under ``name``; a typo gets a suggestion.

    ``module.path:Attr`` is accepted too, for adapters that are not (yet) registered.
    """
    eps = _entry_points(GROUPS[kind])
    if name not in eps and ":" in name:
        return _load_path(name)
    if name not in eps:
        singular = kind.rstrip("s")
        close = difflib.get_close_matches(name, list(eps), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"no {singular} named {name!r}.{hint} Installed: {', '.join(sorted(eps)) or 'none'}."
        )
    return eps[name].load()


def _load_path(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownNameError(f"cannot import {module_name!r} (from {spec!r}): {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise UnknownNameError(f"module {module_name!r} has no attribute {attr!r}") from e
