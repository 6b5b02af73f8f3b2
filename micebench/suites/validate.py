"""Defences of the suite loaders against hostile or broken input, each refusal naming file, line and field.

- Text must be UTF-8: the first bad byte is reported with its line and column.
- Nesting is bounded (:data:`MAX_DEPTH`): JSON or YAML nested 100,000 deep is refused, not a crash.
- YAML aliases may not blow a small file up (an "alias bomb": 540 bytes that expand to millions of
  nodes): the document as loaded may hold at most :data:`ALIAS_GROWTH` times the file's own nodes
  and characters, plus a fixed allowance; recursive aliases are refused.
- Names that become parts of file names or ids hold no control characters (NUL included) and are at
  most :data:`MAX_SUITE_NAME` (suite name) or :data:`MAX_NAME` (session id) characters long.
- Source images are checked from their header before any work: a format Pillow cannot read, or more
  pixels than :func:`max_image_pixels` (a decompression bomb), is refused.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

from micebench.suites.base import SuiteError

MAX_DEPTH = 64
MAX_NAME = 200  # session ids, image paths
MAX_SUITE_NAME = 100  # part of a run directory's name, which must stay under 255 bytes with the editor's
ALIAS_GROWTH = 10
ALIAS_SLACK_NODES = 100_000
ALIAS_SLACK_CHARS = 10_000_000


# ----- text ---------------------------------------------------------------------------------
def _undecodable(data: bytes, err: UnicodeDecodeError, file: Path | str) -> SuiteError:
    line = data.count(b"\n", 0, err.start) + 1
    col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    bad = data[err.start : err.end].hex(" ")
    return SuiteError(f"{file}:{line}: not UTF-8 text (byte(s) {bad} at column {col}); save the file as UTF-8")


def read_utf8(file: Path) -> str:
    """The file's text; a byte sequence that is not UTF-8 is reported with its line and column."""
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _undecodable(data, e, file) from None


def decode_line(raw: bytes, file: Path | str, lineno: int) -> str:
    """One line of a file as text; a byte sequence that is not UTF-8 names this line and its column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = str(_undecodable(raw, e, file)).replace(f"{file}:1:", f"{file}:{lineno}:", 1)
        raise SuiteError(msg) from None


# ----- nesting ------------------------------------------------------------------------------
def check_depth(obj: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse lists/dicts nested deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, tuple, dict)):
            if depth > limit:
                raise SuiteError(f"{where}: nested more than {limit} levels deep")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)


def loads_json(line: str, where: str) -> Any:
    import json

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise SuiteError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise SuiteError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels are refused)") from None
    check_depth(obj, where)
    return obj


# ----- YAML ---------------------------------------------------------------------------------
def compose_yaml(text: str, file: Path | str):
    """The YAML node graph of ``text`` (None for an empty document), after the size and depth checks.

    Raises :class:`SuiteError` for nesting, alias bombs and recursive aliases; ``yaml.YAMLError``
    for syntax errors (the caller reports those with their line).
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise SuiteError(f"{file}: YAML nested too deeply (more than {MAX_DEPTH} levels are refused)") from None
    if root is not None:
        _check_yaml_graph(root, file)
    return root


def construct_yaml(root) -> Any:
    """Python data of a node graph from :func:`compose_yaml` (safe tags only)."""
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _children(node) -> list:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_yaml_graph(root, file: Path | str) -> None:
    """Sizes of the document as loaded (aliases expanded) against its own size; depth; no cycles."""
    import yaml

    line = f"{file}:{root.start_mark.line + 1}"
    expanded: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, chars, depth) once expanded
    on_path: set[int] = set()
    distinct_nodes = distinct_chars = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = [expanded[id(c)] for c in _children(node)]
            chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            expanded[key] = (1 + sum(k[0] for k in kids), chars + sum(k[1] for k in kids),
                             1 + max((k[2] for k in kids), default=0))  # fmt: skip
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise SuiteError(f"{file}:{node.start_mark.line + 1}: a YAML alias refers to the node that contains it "
                             f"(a recursive structure); refused")
        on_path.add(key)
        distinct_nodes += 1
        distinct_chars += len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise SuiteError(f"{file}:{child.start_mark.line + 1}: a YAML alias refers to the node that "
                                 f"contains it (a recursive structure); refused")
            if id(child) not in expanded:
                stack.append((child, False))
        if len(on_path) > MAX_DEPTH + 1:
            raise SuiteError(f"{file}:{node.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep")
    nodes, chars, depth = expanded[id(root)]
    if depth > MAX_DEPTH + 1:  # a scalar at depth MAX_DEPTH sits inside MAX_DEPTH containers
        raise SuiteError(f"{line}: YAML nested more than {MAX_DEPTH} levels deep")
    node_cap = ALIAS_GROWTH * distinct_nodes + ALIAS_SLACK_NODES
    char_cap = ALIAS_GROWTH * distinct_chars + ALIAS_SLACK_CHARS
    if nodes > node_cap or chars > char_cap:
        raise SuiteError(
            f"{line}: YAML aliases expand this {distinct_nodes}-node file to {nodes:,} nodes and {chars:,} "
            f"characters (at most {node_cap:,} and {char_cap:,} are accepted): refused as an alias bomb"
        )


# ----- names --------------------------------------------------------------------------------
def name_problem(value: str, limit: int = MAX_NAME) -> str | None:
    """Why ``value`` cannot be a name (too long, control characters), or None."""
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are allowed"
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        return f"contains the control character U+{ord(bad):04X} at position {value.index(bad)}"
    return None


def check_name(value: str, where: str, limit: int = MAX_NAME) -> str:
    why = name_problem(value, limit)
    if why:
        raise SuiteError(f"{where}: {value[:40]!r}{'...' if len(value) > 40 else ''} {why}")
    return value


# ----- images -------------------------------------------------------------------------------
def max_image_pixels() -> int | None:
    """The largest source image accepted: ``$MICEBENCH_MAX_IMAGE_PIXELS``, else Pillow's limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million pixels); None means no limit."""
    env = os.environ.get("MICEBENCH_MAX_IMAGE_PIXELS")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise SuiteError(f"$MICEBENCH_MAX_IMAGE_PIXELS={env!r}: expected a whole number of pixels") from None
        return value if value > 0 else None
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def check_image_header(path: str | Path, where: str) -> None:
    """Read only the image header: refuse what Pillow cannot open and images over the pixel limit."""
    import warnings

    from PIL import Image

    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # the size is judged below, with our own message
            try:
                with Image.open(path) as im:
                    width, height = im.size
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Image.DecompressionBombError as e:  # only if another thread restored the limit meanwhile
        raise SuiteError(f"{where}: image {path}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SuiteError(f"{where}: cannot read image {path}: {e}") from None
    if limit is not None and width * height > limit:
        raise SuiteError(
            f"{where}: image {path} is {width}x{height} ({width * height:,} pixels), over the limit of {limit:,} "
            f"(a decompression bomb?); shrink it, or raise $MICEBENCH_MAX_IMAGE_PIXELS if it is genuine"
        )
    if width == 0 or height == 0:
        raise SuiteError(f"{where}: image {path} is {width}x{height}")


# ----- MICE JSONL types -----------------------------------------------------------------------
def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f"a string ({value[:30]!r})"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "null"
    return {"int": "a number", "float": "a number", "list": "a list", "dict": "an object"}.get(
        type(value).__name__, type(value).__name__
    )


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


#: Per-turn fields of a MICE JSONL row and the type of each entry (strict: no coercion).
MICE_TURN_TYPES: dict[str, tuple[str, Any]] = {
    "instruction": ("a string", lambda v: isinstance(v, str)),
    "task_type": ("a string", lambda v: isinstance(v, str)),
    "formatted_instruction": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "bg_consistency": ("true or false", lambda v: isinstance(v, bool)),
    "unchanged_objects": ("a list of strings", _string_list),
    "all_objects": ("a list of strings", _string_list),
    "available_objects": ("a list of strings", _string_list),
}


def check_mice_row_types(obj: dict[str, Any], where: str, n_turns: int) -> None:
    """Every per-turn entry has its exact JSON type: ``"plate"`` where ``["plate"]`` belongs is refused
    (it would otherwise become the objects p, l, a, t, e). ``available_objects`` is optional."""
    for key, (expected, ok) in MICE_TURN_TYPES.items():
        if key not in obj:
            continue
        values = obj[key]
        if not isinstance(values, list) or len(values) != n_turns:
            got = f"{len(values)} entries" if isinstance(values, list) else _kind(values)
            raise SuiteError(f"{where}: field {key!r} must be a list with one entry per turn ({n_turns}), got {got}")
        for t, v in enumerate(values):
            if not ok(v):
                raise SuiteError(f"{where}: field {key!r}[{t}] must be {expected}, got {_kind(v)}")
    turns = obj.get("turns")
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int)):
        raise SuiteError(f"{where}: field 'turns' must be a whole number, got {_kind(turns)}")
    image = obj.get("image")
    if isinstance(image, str):
        check_name(image, f"{where}: field 'image'", limit=4096)
