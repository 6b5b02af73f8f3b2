"""The Python API behind ``micebench run`` / ``run --resume`` / ``score``.

    from micebench.evaluate import start_run
    result = start_run(suite="synth", editor="identity", judges=[("pixel", {})], out="runs")
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import micebench
from micebench.editors.base import Editor
from micebench.errors import SetupError
from micebench.judges.base import Judge, create_judge
from micebench.runner import EditSummary, Runner, RunSettings, close_quietly
from micebench.store import RunStore, RunStoreError
from micebench.suites.base import SuiteData
from micebench.table import export_turn_table


@dataclass
class RunResult:
    run_dir: Path
    edit: EditSummary
    judged: dict[str, int] = field(default_factory=dict)

    @property
    def failed_turns(self) -> int:
        """Turns that did not end ``ok``: errors, skipped, and any left pending."""
        return self.edit.errors + self.edit.skipped + self.edit.pending


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    """The source checkout's commit, when micebench runs from one."""
    root = Path(micebench.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def describe_judge(judge: Judge) -> dict[str, Any]:
    d = judge.describe()
    d["key"] = judge.key
    d["prompt_hash"] = getattr(judge, "prompt_hash", "") or ""
    return d


def with_seed(cls: type, options: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """Fill an adapter's ``seed`` option from the run's seed unless the user set it."""
    if seed is not None and "seed" in getattr(cls.Config, "model_fields", {}) and "seed" not in options:
        return {**options, "seed": seed}
    return options


def build_judges(specs: list[tuple[str, dict[str, Any]]], seed: int | None = None) -> list[Judge]:
    """Build the judges; a constructor that fails (other than on bad options) is a SetupError naming it."""
    from micebench import registry
    from micebench.options import OptionsError
    from micebench.preflight import checked

    judges = []
    for name, opts in specs:
        cls = registry.load("judges", name)
        options = with_seed(cls, opts, seed)
        try:
            judges.append(checked(lambda n=name, o=options: create_judge(n, o), f"judge {name}: building it"))
        except SetupError as e:
            if isinstance(e.__cause__, OptionsError):
                raise e.__cause__ from None
            raise
    return judges


def _close_all(judges: list[Judge], editor: Editor | None = None) -> None:
    if editor is not None:
        close_quietly(editor, f"editor {editor.name}")
    for j in judges:
        close_quietly(j, f"judge {j.name}")


def start_run(
    suite: SuiteData,
    editor: str,
    editor_options: dict[str, Any],
    judges: list[tuple[str, dict[str, Any]]],
    out: str | Path = "runs",
    run_name: str | None = None,
    settings: RunSettings | None = None,
    seed: int | None = 0,
    command_line: str = "",
) -> RunResult:
    """Create a run directory for ``suite`` x ``editor``, edit every turn, then judge.

    Before anything is written, every judge and the editor pass the preflight
    (:mod:`micebench.preflight`): a setup problem raises :class:`SetupError` and no directory is made.
    """
    from micebench import registry
    from micebench.preflight import preflight

    settings = settings or RunSettings()
    editor_cls = registry.load("editors", editor)  # fail on a typo before anything is written
    editor_options = with_seed(editor_cls, editor_options, seed)
    # Build (and so validate) the editor config now; the editor itself is built by the preflight.
    from micebench.options import build_config

    editor_config = build_config(editor_cls.Config, editor_options, where=f"editor {editor!r}").model_dump(mode="json")
    judge_objs = build_judges(judges, seed)
    try:
        built = preflight(editor_cls, editor_options, judge_objs, name=editor, isolate=settings.isolate)
    except BaseException:
        _close_all(judge_objs)
        raise
    assert built is not None
    editor_obj, described = built
    run_id = run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{suite.name}-{editor}-{secrets.token_hex(2)}".replace(
        "/", "_"
    )
    command_line = command_line or " ".join(sys.argv)
    manifest = {
        "run_id": run_id,
        "micebench_version": micebench.__version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": _package_version("torch"),
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished": None,
        "command_line": command_line,
        "seed": seed,
        "batch_size": settings.batch_size,
        "turn_timeout": settings.turn_timeout,
        "judge_timeout": settings.judge_timeout,
        "isolate": settings.isolate,
        "suite": {
            "name": suite.name,
            "version": suite.version,
            "source": suite.source,
            "options": suite.options,
            "digest": suite.digest(),
            "n_sessions": len(suite.sessions),
        },
        # What the editor says about itself (e.g. a hash of its prompt texts) joins the manifest, and the
        # config hash covers it, so a leaderboard row changes when the editor does.
        "editor": {"name": editor, "config": editor_config, "describe": described,
                   "config_hash": config_hash(described)},
        "judges": [describe_judge(j) for j in judge_objs],
    }
    try:
        store = RunStore.create(Path(out) / run_id, manifest, suite.sessions, command=command_line)
    except BaseException:
        _close_all(judge_objs, editor_obj)
        raise
    return _execute(store, editor, editor_options, judge_objs, settings, built)


def resume_run(run_dir: str | Path, progress: bool = True, command_line: str = "") -> RunResult:
    """Finish an interrupted run: edit what is missing, judge what is unjudged, export.

    Takes the run directory's lock (one writer at a time), redoes turns whose stored images are damaged,
    and runs the preflight of whatever still has work (the judges, the editor) before doing any.
    """
    from micebench import registry
    from micebench.preflight import preflight

    store = RunStore.open(run_dir, write=True, command=command_line)
    try:
        store.repair()
        m = store.read_manifest()
        settings = RunSettings(batch_size=m.get("batch_size") or 8, turn_timeout=m.get("turn_timeout"),
                               judge_timeout=m.get("judge_timeout"), isolate=bool(m.get("isolate")),
                               progress=progress)  # fmt: skip
        judges = build_judges([(j["name"], j.get("config", {})) for j in m.get("judges", [])])
    except BaseException:
        store.close()
        raise
    built = None
    try:
        for j, recorded in zip(judges, m.get("judges", []), strict=True):
            if j.key != recorded.get("key"):
                raise RunStoreError(
                    f"{run_dir}: judge {j.name!r} is now configured differently from when the run started "
                    f"(key {j.key} vs {recorded.get('key')}); its code or defaults changed. "
                    f"Use `micebench score {run_dir} --judge {j.name}` to score with the new version."
                )
        probe = Runner(store, settings)
        editing = probe.edit_todo() > 0
        busy = [j for j in judges if editing or probe.judge_todo(j) > 0]
        name, options = m["editor"]["name"], m["editor"]["config"]
        editor_cls = registry.load("editors", name) if editing else None
        built = preflight(editor_cls, options, busy, name=name, isolate=settings.isolate)
    except BaseException:
        _close_all(judges, built[0] if built else None)
        store.close()
        raise
    return _execute(store, name, options, judges, settings, built)


def score_run(run_dir: str | Path, judges: list[tuple[str, dict[str, Any]]], settings: RunSettings,
              command_line: str = "") -> RunResult:  # fmt: skip
    """Score a run's stored images with (other) judges, without editing again."""
    from micebench.preflight import preflight

    store = RunStore.open(run_dir, write=True, command=command_line)
    judge_objs: list[Judge] = []
    try:
        m = store.read_manifest()
        judge_objs = build_judges(judges, m.get("seed"))
        preflight(None, {}, judge_objs)
        entries = [j for j in m.get("judges", []) if j["name"] not in {x.name for x in judge_objs}]
        store.update_manifest(judges=entries + [describe_judge(j) for j in judge_objs])
        runner = Runner(store, settings)
        try:
            judged = runner.judge(judge_objs)
        finally:
            _close_all(judge_objs)
            judge_objs = []
            export_turn_table(store)
        edit = EditSummary.of(store.turn_records().values(), sum(len(s.turns) for s in store.sessions()))
    finally:
        _close_all(judge_objs)
        store.close()
    return RunResult(Path(run_dir), edit, judged)


def _execute(store: RunStore, editor: str, editor_options: dict[str, Any], judges: list[Judge],
             settings: RunSettings, built: tuple[Editor, dict[str, Any]] | None = None) -> RunResult:
    """The edit then judge phases on an open, locked store; the store is closed (and unlocked) at the end.

    ``built`` is the (editor, description) the preflight made; without it an editor is built (and
    checked) only if there is something to edit.
    """
    runner = Runner(store, settings)
    unused: Editor | None = built[0] if built else None

    def build_editor() -> Editor:
        nonlocal unused
        if built is not None:
            ed, described = built
        else:
            from micebench import registry
            from micebench.preflight import build_editor as build

            ed, described = build(registry.load("editors", editor), editor_options, editor, settings.isolate)
        # What the editor says about itself joins the manifest; the config hash covers it.
        entry = {**store.read_manifest()["editor"], "describe": described, "config_hash": config_hash(described)}
        store.update_manifest(editor=entry)
        unused = None  # the runner owns it now, and closes it
        return ed

    try:
        try:
            edit = runner.edit(build_editor)
            judged = runner.judge(judges)
        finally:
            if unused is not None:  # built by the preflight, never used: nothing was left to edit
                close_quietly(unused, f"editor {editor}")
            _close_all(judges)
            # Whatever happened, the table reflects everything recorded so far.
            export_turn_table(store)
        m = store.read_manifest()
        counts = {"ok": edit.done, "error": edit.errors, "skipped": edit.skipped}
        # A resume with nothing left to do leaves the manifest alone: `finished` says when the work ended.
        if m.get("finished") is None or runner.edited or any(judged.values()) or m.get("counts") != counts:
            store.update_manifest(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), counts=counts)
    finally:
        store.close()
    return RunResult(store.root, edit, judged)
