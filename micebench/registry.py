"""A lazy registry of adapters, fed by Python entry points.

Built-in adapters are declared in pyproject.toml under the same entry-point groups as
third-party ones (``micebench.editors``, ``micebench.judges``, ``micebench.suites``), so there
is one way in. Nothing is imported until a name is looked up.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class AdapterInfo:
    """What ``micebench list`` shows about one adapter."""

    name: str
    target: str  # "module:attr"
    description: str  # one line
    needs: tuple[str, ...] | None  # what it takes to run: extras, a GPU, weights, a key; () nothing; None: not stated


def describe(kind: str, detailed: bool = False) -> list[Any]:
    """(name, "module:attr") pairs without importing anything; with ``detailed``, one
    :class:`AdapterInfo` per adapter, which imports each adapter's module (not its heavy libraries:
    adapters import those when used) to read its ``description`` and ``needs`` class attributes
    (else the docstring's first line). An adapter that fails to import is listed with the reason.
    """
    eps = sorted(_entry_points(GROUPS[kind]).items())
    if not detailed:
        return [(n, ep.value) for n, ep in eps]
    return [_info(n, ep) for n, ep in eps]


def _info(name: str, ep: EntryPoint) -> AdapterInfo:
    try:
        obj = ep.load()
    except Exception as e:  # a broken third-party adapter is listed with its error, not a crash of `list`
        return AdapterInfo(name, ep.value, f"(cannot import: {type(e).__name__}: {e})", None)
    description = getattr(obj, "description", "")
    if not isinstance(description, str) or not description:
        doc = (getattr(obj, "__doc__", "") or "").strip()
        description = doc.splitlines()[0].strip() if doc else ""
    needs = getattr(obj, "needs", None)
    needs = tuple(str(x) for x in needs) if isinstance(needs, (tuple, list)) else None
    return AdapterInfo(name, ep.value, description or "(no description)", needs)


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
