"""Preflight: prove every judge and the editor can work before any editing starts.

A judge whose models cannot load, whose server cannot be reached, or whose extra is not installed
used to fail only in the judge phase, after the whole edit phase (hours to days). Here each judge's
``preflight()`` runs first (small models are loaded once and let go; a VLM server answers one
``GET /models``), then the editor is built, its ``preflight()`` loads what it needs, and its
``describe()`` is checked; the same editor instance then does the editing. Any failure, including an
adapter calling ``sys.exit()``, becomes a :class:`SetupError` with one line naming the adapter: the
CLI prints it and exits 2, and no run directory is made.

``micebench run --dry-run`` runs only this and prints what would run (:func:`dry_run`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from micebench.editors.base import Editor
from micebench.errors import SetupError
from micebench.judges.base import Judge


def checked(fn: Callable[[], Any], what: str) -> Any:
    """``fn()``, with any failure (``SystemExit`` included, Ctrl-C excluded) as a SetupError naming ``what``
    (e.g. "judge mice"), unless its message already names the adapter up front."""
    try:
        return fn()
    except SetupError as e:
        msg, adapter = str(e), what.split(":")[0].split()[-1]
        raise SetupError(msg if adapter in msg[: len(adapter) + 24] else f"{what}: {msg}") from e
    except (Exception, SystemExit) as e:
        from micebench.runner import describe_exception

        raise SetupError(f"{what}: {describe_exception(e)}") from e


def build_editor(editor_cls: type[Editor] | None, options: dict[str, Any], name: str, isolate: bool = False,
                 make: Callable[[], Editor] | None = None) -> tuple[Editor, dict[str, Any]]:  # fmt: skip
    """Construct the editor (with ``make`` when given, e.g. for a ready instance; else ``editor_cls(options)``,
    in a child process when ``isolate``), run its ``preflight()``, and return it with its JSON-checked
    description."""
    if isolate:
        from micebench.isolate import IsolatedEditor

        if editor_cls is None:
            raise SetupError(f"editor {name}: --isolate needs an editor name or class, not a ready instance")
        editor: Editor = IsolatedEditor(editor_cls, options, name)
    elif make is not None:
        editor = checked(make, f"editor {name}: building it")
    else:
        from micebench.options import build_config

        assert editor_cls is not None
        config = build_config(editor_cls.Config, options, where=f"editor {name!r}")
        editor = checked(lambda: editor_cls(config), f"editor {name}: building it")
        editor.name = name
    try:
        checked(editor.preflight, f"editor {name}")
        described = checked(editor.describe, f"editor {name}: describe()")
        if not isinstance(described, dict):
            raise SetupError(f"editor {name}: describe() returned a {type(described).__name__}, not a dict")
        try:
            json.dumps(described)
        except (TypeError, ValueError) as e:
            raise SetupError(f"editor {name}: describe() returned something that cannot be stored as JSON ({e})"
                             ) from e  # fmt: skip
    except BaseException:
        from micebench.runner import close_quietly

        close_quietly(editor, f"editor {name}")
        raise
    return editor, described


def preflight(editor_cls: type[Editor] | None, editor_options: dict[str, Any], judges: list[Judge], *,
              name: str | None = None, isolate: bool = False, report: Callable[[str], None] | None = None,
              make: Callable[[], Editor] | None = None) -> tuple[Editor, dict[str, Any]] | None:  # fmt: skip
    """Check every judge, then build and check the editor; raise :class:`SetupError` on the first failure.

    Judges go first: their checks take seconds, and their models are let go before the editor (which
    may take minutes to load) claims the GPU. Returns ``(editor, description)`` for the run to use (no
    second load), or None when there is no editor to check (``editor_cls`` and ``make`` both None:
    judges only, e.g. ``micebench score``). ``make`` builds the editor instead of ``editor_cls(options)``.
    ``report`` receives one line per check.
    """
    say = report or (lambda line: None)
    for judge in judges:
        started = time.perf_counter()
        checked(judge.preflight, f"judge {judge.name}")
        say(f"judge {judge.name}: ok ({time.perf_counter() - started:.1f} s)")
    if editor_cls is None and make is None:
        return None
    name = name or getattr(editor_cls, "name", "") or getattr(editor_cls, "__name__", "editor")
    started = time.perf_counter()
    built = build_editor(editor_cls, editor_options, name, isolate, make)
    say(f"editor {name}: ok ({time.perf_counter() - started:.1f} s{', in a child process' if isolate else ''})")
    return built


def dry_run(suite: Any, editor: Any, editor_options: dict[str, Any], judge_specs: list[tuple[str, dict[str, Any]]],
            *, out: str, run_name: str | None, settings: Any, seed: int | None) -> str:  # fmt: skip
    """Run the preflight for ``suite`` x ``editor`` x judges and describe what a real run would do.
    Writes nothing; raises what a real run would raise before its first edit."""
    from micebench.evaluate import build_judges, editor_factory, resolve_adapter, with_seed
    from micebench.runner import close_quietly

    _, editor_cls, instance = resolve_adapter("editors", editor)
    if instance is None:
        editor_options = with_seed(editor_cls, editor_options, seed)
    name, _, _, make_editor = editor_factory(editor, editor_options)
    judges = build_judges(judge_specs, seed)
    checks: list[str] = []
    try:
        ed, described = preflight(editor_cls, editor_options, judges, name=name, isolate=settings.isolate,
                                  report=checks.append, make=None if settings.isolate else make_editor)  # fmt: skip
        close_quietly(ed, f"editor {name}")
    finally:
        for j in judges:
            close_quietly(j, f"judge {j.name}")
    turns = sum(len(s.turns) for s in suite.sessions)
    longest = max((len(s.turns) for s in suite.sessions), default=0)
    lines = [
        f"dry run: nothing was edited or written; every check passed ({len(checks)}):",
        *(f"  {c}" for c in checks),
        f"suite {suite.name} (version {suite.version}): {len(suite.sessions)} sessions, {turns} turns "
        f"(up to {longest} per session)",
        f"editor {name}: {json.dumps(described.get('config', editor_options), sort_keys=True, default=str)}",
    ]
    for j in judges:
        d = j.describe()
        flag = "  [random weights: not publishable]" if d.get("random_weights") else ""
        lines.append(f"judge {j.name}: metrics {', '.join(j.metric_names) or '(as returned)'}{flag}")
    where = f"{out}/{run_name}" if run_name else f"{out}/<time>-{suite.name}-{name}-<random>"
    lines.append(f"would write {where} (batch size {settings.batch_size}, turn timeout {settings.turn_timeout}, "
                 f"judge timeout {settings.judge_timeout}, isolate {settings.isolate})")  # fmt: skip
    return "\n".join(lines)
