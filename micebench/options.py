"""Adapter options: ``-M key=value`` pairs and YAML files, validated by the adapter's config class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class AdapterConfig(BaseModel):
    """Base class of every adapter's options: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class OptionsError(ValueError):
    """Options that do not parse or do not validate; the message names the option."""


def parse_pairs(pairs: tuple[str, ...] | list[str], flag: str = "-M") -> dict[str, Any]:
    """Turn ``key=value`` strings into a dict; values are read as YAML scalars (1, 0.5, true, [a, b])."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionsError(f"{flag} {pair!r}: expected key=value")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
        if out[key] is None:
            out[key] = None
    return out


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise OptionsError(f"{p}: no such file")
    from micebench.suites.base import SuiteError
    from micebench.suites.validate import compose_yaml, construct_yaml, read_utf8

    try:  # the suite loader's defences: UTF-8 named by line, bounded nesting and alias expansion
        root = compose_yaml(read_utf8(p), p)
        data = (construct_yaml(root) if root is not None else None) or {}
    except SuiteError as e:
        raise OptionsError(str(e)) from None
    except yaml.YAMLError as e:
        raise OptionsError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise OptionsError(f"{p}: expected a mapping of option names to values")
    return data


def build_config(cls: type[AdapterConfig], values: dict[str, Any], where: str) -> AdapterConfig:
    """Validate ``values`` against ``cls``; errors name each bad field and where it came from."""
    try:
        return cls(**values)
    except ValidationError as e:
        lines = [f"{where}: invalid options for {cls.__name__}:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(root)"
            lines.append(f"  {loc}: {err['msg']}")
        known = ", ".join(cls.model_fields) or "none"
        lines.append(f"  known options: {known}")
        raise OptionsError("\n".join(lines)) from e
