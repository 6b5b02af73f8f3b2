"""YAML suites: hand-written sessions, validated against :class:`SuiteFile`.

Schema (``micebench schema`` prints it as JSON Schema; ``tasks/suite.schema.json`` is a copy)::

    name: photos            # suite name
    version: "1"            # bump when sessions change: old numbers stop comparing
    description: ...
    image_source: files     # files (default): paths relative to this file's folder or --image-root
                            # skimage: image names are scikit-image sample photos (astronaut, ...)
    sessions:
      - id: astronaut-cm
        subset: cm          # cm: turn 1 sets a persistent rule; cu: later turns use pronouns
        image: astronaut
        turns:
          - instruction: "..."
            task_type: color_alter
            formatted_instruction: "Change the color of [X] to [red]"
            unchanged_objects: [...]
            all_objects: [...]
            bg_consistency: true

Errors name the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from micebench.spec import Session, Turn
from micebench.suites.base import Suite, SuiteConfig, SuiteData, SuiteError, resolve_inside
from micebench.suites.validate import (
    MAX_NAME,
    MAX_SUITE_NAME,
    check_image_header,
    compose_yaml,
    construct_yaml,
    name_problem,
    read_utf8,
)

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "hubble_deep_field")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _name_check(limit: int):
    def check(value: str) -> str:
        why = name_problem(value, limit)
        if why:
            raise ValueError(f"{value[:40]!r}{'...' if len(value) > 40 else ''} {why}")
        return value

    return AfterValidator(check)


_Id = Annotated[str, Field(min_length=1), _name_check(MAX_NAME)]
_SuiteName = Annotated[str, Field(min_length=1), _name_check(MAX_SUITE_NAME)]


class SuiteSession(_Strict):
    id: _Id
    subset: str = ""
    image: str = Field(min_length=1, description="Relative image path, or a scikit-image photo name.")
    turns: list[Turn] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SuiteFile(_Strict):
    """A YAML suite file."""

    name: _SuiteName
    version: str = "1"
    description: str = ""
    image_source: Literal["files", "skimage"] = "files"
    sessions: list[SuiteSession] = Field(min_length=1)


def suite_json_schema() -> dict[str, Any]:
    return SuiteFile.model_json_schema()


def _line_map(root: yaml.Node | None) -> dict[tuple, int]:
    """Map each key path (e.g. ('sessions', 2, 'turns', 0, 'task_type')) to its 1-based line.

    ``root`` comes from :func:`compose_yaml`, so its size with aliases expanded is bounded."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def _where(file: Path, lines: dict[tuple, int], loc: tuple) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{file}:{lines[loc[:n]]}"
    return str(file)


def _skimage_photo(name: str, cache: Path) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data

    if name not in SKIMAGE_PHOTOS:
        raise SuiteError(f"unknown scikit-image photo {name!r}; available: {', '.join(SKIMAGE_PHOTOS)}")
    path = cache / f"{name}.png"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(getattr(data, name)())
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(arr[..., :3].astype("uint8")).save(tmp)
        tmp.replace(path)
    return path


def cache_dir() -> Path:
    import os

    return Path(os.environ.get("MICEBENCH_CACHE", Path.home() / ".cache" / "micebench"))


def load_yaml_suite(path: str | Path, image_root: Path | None = None, check_images: bool = True) -> SuiteData:
    file = Path(path)
    if not file.is_file():
        raise SuiteError(f"{file}: no such file")
    text = read_utf8(file)
    try:
        root = compose_yaml(text, file)  # bounded: nesting depth, alias expansion
        raw = construct_yaml(root) if root is not None else None
        lines = _line_map(root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise SuiteError(f"{file}{at}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if not isinstance(raw, dict):
        raise SuiteError(f"{file}: expected a mapping with 'name' and 'sessions'")
    try:
        spec = SuiteFile.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors()[:10]:
            loc = tuple(err["loc"])
            field = ".".join(str(x) if isinstance(x, str) else f"[{x}]" for x in loc).replace(".[", "[")
            msgs.append(f"{_where(file, lines, loc)}: {field or '(root)'}: {err['msg']}")
        raise SuiteError("invalid suite:\n  " + "\n  ".join(msgs)) from e
    sessions = []
    seen: set[str] = set()
    missing = []
    for i, s in enumerate(spec.sessions):
        where = f"{_where(file, lines, ('sessions', i, 'image'))}: sessions[{i}].image"
        if s.id in seen:
            raise SuiteError(f"{_where(file, lines, ('sessions', i, 'id'))}: sessions[{i}].id: {s.id!r} repeats")
        seen.add(s.id)
        if spec.image_source == "skimage":
            try:
                image = _skimage_photo(s.image, cache_dir() / "skimage")
            except SuiteError as e:
                raise SuiteError(f"{where}: {e}") from e
        else:
            bases = [file.parent] + ([image_root] if image_root is not None else [])
            image = resolve_inside(bases, s.image, where)
            if check_images and not image.is_file():
                missing.append(f"{s.image} ({where})")
            elif check_images:
                check_image_header(image, where)
        sessions.append(
            Session(id=s.id, suite=spec.name, subset=s.subset, source_image=str(image), turns=tuple(s.turns),
                    metadata=s.metadata, version=spec.version)
        )
    if missing:
        raise SuiteError(f"{file}: {len(missing)} source images are missing; first:\n  " + "\n  ".join(missing[:5]))
    return SuiteData(name=spec.name, version=spec.version, sessions=tuple(sessions), source=str(file))


def tasks_dir() -> Path:
    """The ``tasks/`` folder of a source checkout (where shipped YAML suites live)."""
    return Path(__file__).resolve().parents[2] / "tasks"


class PhotosSuite(Suite):
    """Four scikit-image photos, three turns each, in MICE's bracket grammar (tasks/photos.yaml)."""

    class Config(SuiteConfig):
        """No options."""

    def load(self, image_root: Path | None = None) -> SuiteData:
        path = tasks_dir() / "photos.yaml"
        if not path.is_file():
            raise SuiteError(f"{path}: the photos suite ships in the source checkout's tasks/ folder")
        data = load_yaml_suite(path, image_root)
        return SuiteData(name=data.name, version=data.version, sessions=data.sessions, source="registered:photos")
