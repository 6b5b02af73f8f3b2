"""The engine behind :mod:`micebench.api` (``micebench.run`` / ``score``, the CLI's ``run`` / ``run --resume``
/ ``score``): it creates the run directory, drives the runner and writes the manifest. Use the API;
this module takes already-loaded pieces::

    from micebench.evaluate import start_run
    from micebench.suites.resolve import load_suite
    result = start_run(load_suite("synth", {"n": 4}), "identity", {}, [("pixel", {})], out="runs")
    result.run_dir  # runs/<time>-synth-identity-<hex>
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
from micebench.executors import ExecutorSpec, make_executor
from micebench.judges.base import Judge
from micebench.results.turn_table import export_turn_table
from micebench.runner import EditSummary, Runner, RunSettings, close_quietly
from micebench.store import RunStore, RunStoreError
from micebench.suites.base import SuiteData


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
    """The judge's manifest entry: its description, key, prompt hash and metric specs (which tell the
    results tools each metric's role and direction)."""
    d = judge.describe()
    d["key"] = judge.key
    d["prompt_hash"] = getattr(judge, "prompt_hash", "") or ""
    d["metric_specs"] = [s.model_dump(mode="json") for s in judge.metric_specs()]
    return d


def with_seed(cls: type, options: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """Fill an adapter's ``seed`` option from the run's seed unless the user set it."""
    if seed is not None and "seed" in getattr(cls.Config, "model_fields", {}) and "seed" not in options:
        return {**options, "seed": seed}
    return options


def adapter_name(kind: str, cls: type) -> str:
    """The name a run records for an adapter class: its registered name, else ``module:Class`` (which
    ``registry.load`` takes back, so a resume finds it again)."""
    from micebench import registry

    target = f"{cls.__module__}:{cls.__qualname__}"
    return next((n for n, t in registry.describe(kind) if t == target), target)


def resolve_adapter(kind: str, spec: Any) -> tuple[str, type, Any]:
    """(name, class, instance or None) of a name, ``module:Class`` string, class or instance."""
    from micebench import registry

    if isinstance(spec, str):
        cls = registry.load(kind, spec)
        # "module:Class" of a registered adapter is recorded under its registered name
        return (adapter_name(kind, cls) if ":" in spec and isinstance(cls, type) else spec), cls, None
    if isinstance(spec, type):
        return adapter_name(kind, spec), spec, None
    given = getattr(spec, "name", "") or ""
    return given or adapter_name(kind, type(spec)), type(spec), spec


def build_judges(specs: list[Any], seed: int | None = None) -> list[Judge]:
    """Judges from ``(name or class, options)`` pairs, names, classes or ready instances (kept as given).
    A constructor that fails (bad options aside) is a SetupError naming the judge."""
    from micebench.options import OptionsError, build_config
    from micebench.preflight import checked

    judges = []
    for spec in specs:
        target, opts = spec if isinstance(spec, tuple) else (spec, {})
        name, cls, instance = resolve_adapter("judges", target)
        if instance is not None:
            if opts:
                raise OptionsError(f"judge {name!r} is an instance: give its options when you build it")
            instance.name = name
            judges.append(instance)
            continue
        config = build_config(cls.Config, with_seed(cls, dict(opts), seed), where=f"judge {name!r}")
        judge = checked(lambda c=cls, k=config: c(k), f"judge {name}: building it")
        judge.name = name
        judges.append(judge)
    return judges


def _close_all(judges: list[Judge], editor: Editor | None = None) -> None:
    if editor is not None:
        close_quietly(editor, f"editor {editor.name}")
    for j in judges:
        close_quietly(j, f"judge {j.name}")


def editor_factory(editor: Any, options: dict[str, Any]) -> tuple[str, type, dict[str, Any], Any]:
    """(name, class, validated config as JSON, factory) of a name, ``module:Class``, class or instance.

    An instance is used as given (its own config is recorded); otherwise the factory builds the editor
    from the validated options when the runner first needs it.
    """
    from micebench.options import OptionsError, build_config

    name, cls, instance = resolve_adapter("editors", editor)
    if instance is not None:
        if options:
            raise OptionsError(f"editor {name!r} is an instance: give its options when you build it")
        config = instance.config

        def make() -> Editor:
            instance.name = name
            return instance
    else:
        config = build_config(cls.Config, options, where=f"editor {name!r}")

        def make() -> Editor:
            ed = cls(config)
            ed.name = name
            return ed

    return name, cls, config.model_dump(mode="json"), make


def start_run(
    suite: SuiteData,
    editor: str | type | Editor,
    editor_options: dict[str, Any],
    judges: list[Any],
    out: str | Path = "runs",
    run_name: str | None = None,
    settings: RunSettings | None = None,
    seed: int | None = 0,
    command_line: str = "",
    executor: ExecutorSpec | None = None,
    shard: dict[str, Any] | None = None,
) -> RunResult:
    """Create a run directory for ``suite`` x ``editor``, edit every turn, then judge.

    ``editor`` is a registered name, ``module:Class``, an Editor class or instance; ``judges`` holds
    ``(name or class, options)`` pairs, names, classes or Judge instances. ``executor`` says where
    editors and judges run (default: here, see micebench.executors); ``shard`` (from
    :func:`micebench.merge.shard_suite`) marks the run as one shard of a larger suite.

    Before anything is written, every judge and the editor pass the preflight
    (:mod:`micebench.preflight`): a setup problem raises :class:`SetupError` and no directory is made.
    """
    from micebench.preflight import preflight

    settings = settings or RunSettings()
    # Resolve the editor and validate its config now (a typo fails before anything is written); the
    # preflight then builds and loads it, and that instance edits.
    _, editor_cls, instance = resolve_adapter("editors", editor)
    if instance is None:
        editor_options = with_seed(editor_cls, editor_options, seed)
    name, _, editor_config, make_editor = editor_factory(editor, editor_options)
    judge_objs = build_judges(judges, seed)
    runs_on = make_executor(executor)
    if instance is not None and runs_on.name != "local":
        _close_all(judge_objs)
        raise SetupError(f"--executor {runs_on.name} builds the editor on each worker from its name and options: "
                         f"give a registered name, module:Class or a class, not an instance ({name})")
    local = runs_on.name == "local"  # elsewhere the workers build the editor (and run its preflight)
    try:
        built = preflight(editor_cls if local else None, editor_options, judge_objs, name=name,
                          isolate=settings.isolate, make=make_editor if local and not settings.isolate else None)
        runs_on.setup()  # a cluster that is not there stops the run here, before a run directory exists
    except BaseException:
        _close_all(judge_objs)
        runs_on.close()
        raise
    editor_obj, described = built if built else (None, editor_config)
    command_line = command_line or " ".join(sys.argv)
    safe = name.replace(":", "-").replace(".", "-")
    run_id = run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{suite.name}-{safe}-{secrets.token_hex(2)}".replace(
        "/", "_"
    )
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
        "editor": {"name": name, "config": editor_config, "describe": described,
                   "config_hash": config_hash(described)},
        "judges": [describe_judge(j) for j in judge_objs],
        "executor": runs_on.describe(),
        "shard": shard,
    }
    try:
        store = RunStore.create(Path(out) / run_id, manifest, suite.sessions, command=command_line)
    except BaseException:
        _close_all(judge_objs, editor_obj)
        runs_on.close()
        raise
    return _execute(store, (name, editor_config, make_editor), judge_objs, settings, runs_on, built)


def resume_run(run_dir: str | Path, progress: bool = True, command_line: str = "",
               executor: ExecutorSpec | None = None) -> RunResult:  # fmt: skip
    """Finish an interrupted run: edit what is missing, judge what is unjudged, export.

    It runs on the executor recorded in the manifest unless ``executor`` says otherwise (e.g. a
    Ray run finished on one machine); the manifest then lists the executors the run has used.

    Takes the run directory's lock (one writer at a time), redoes turns whose stored images are damaged,
    and runs the preflight of whatever still has work (the judges, the editor) before doing any.
    """
    from micebench.preflight import preflight
    from micebench.results.run import RunManifest

    store = RunStore.open(run_dir, write=True, command=command_line)
    built = None
    judges: list[Judge] = []
    runs_on = None
    try:
        store.repair()
        raw = store.read_manifest()
        m = RunManifest.model_validate(raw)
        settings = RunSettings(batch_size=m.batch_size or 8, turn_timeout=m.turn_timeout,
                               judge_timeout=raw.get("judge_timeout"), isolate=bool(raw.get("isolate")),
                               progress=progress)  # fmt: skip
        judges = build_judges([(j.name, j.config) for j in m.judges])
        for j, recorded in zip(judges, m.judges, strict=True):
            if j.key != recorded.key:
                raise RunStoreError(
                    f"{run_dir}: judge {j.name!r} is now configured differently from when the run started "
                    f"(key {j.key} vs {recorded.key}); its code or defaults changed. "
                    f"Use `micebench score {run_dir} --judge {j.name}` to score with the new version."
                )
        name, editor_cls, _, make_editor = editor_factory(m.editor.name, m.editor.config)
        runs_on = make_executor(executor or ExecutorSpec.from_manifest(raw.get("executor")))
        local = runs_on.name == "local"
        probe = Runner(store, settings, runs_on)
        editing = probe.edit_todo() > 0
        busy = [j for j in judges if editing or probe.judge_todo(j) > 0]
        built = preflight(editor_cls if editing and local else None, m.editor.config, busy, name=name,
                          isolate=settings.isolate, make=make_editor if editing and local and not settings.isolate
                          else None)  # fmt: skip
        runs_on.setup()
        now = runs_on.describe()
        if raw.get("executor") and now != raw["executor"]:
            store.update_manifest(executor=now, previous_executors=[*raw.get("previous_executors", []),
                                                                    raw["executor"]])  # fmt: skip
    except BaseException:
        _close_all(judges, built[0] if built else None)
        if runs_on is not None:
            runs_on.close()
        store.close()
        raise
    return _execute(store, (m.editor.name, m.editor.config, make_editor), judges, settings, runs_on, built)


def score_run(run_dir: str | Path, judges: list[Any], settings: RunSettings, command_line: str = "",
              executor: ExecutorSpec | None = None) -> RunResult:  # fmt: skip
    """Score a run's stored images with (other) judges, without editing again. The judges pass the
    preflight before the run directory is touched."""
    from micebench.preflight import preflight

    store = RunStore.open(run_dir, write=True, command=command_line)
    judge_objs: list[Judge] = []
    try:
        manifest = store.read_manifest()
        judge_objs = build_judges(judges, manifest.get("seed"))
        preflight(None, {}, judge_objs)
        entries = [j for j in manifest.get("judges", []) if j["name"] not in {x.name for x in judge_objs}]
        store.update_manifest(judges=entries + [describe_judge(j) for j in judge_objs])
        runs_on = make_executor(executor)
        runs_on.setup()
        try:
            judged = Runner(store, settings, runs_on).judge(judge_objs)
        finally:
            runs_on.close()
            _close_all(judge_objs)
            judge_objs = []
            export_turn_table(store)
        edit = EditSummary.of(store.turn_records().values(), sum(len(s.turns) for s in store.sessions()))
    finally:
        _close_all(judge_objs)
        store.close()
    return RunResult(Path(run_dir), edit, judged)


def _execute(store: RunStore, editor: tuple[str, dict[str, Any], Any], judges: list[Judge], settings: RunSettings,
             runs_on: Any, built: tuple[Editor, dict[str, Any]] | None = None) -> RunResult:
    """The edit then judge phases on an open, locked store; the store is closed (and unlocked) at the end.

    ``built`` is the (editor, description) the preflight made; without it the executor builds one
    (``runs_on.make_editor``: here, or on each worker) only if there is something to edit.
    """
    runner = Runner(store, settings, runs_on)
    name, options, make_editor = editor
    unused: Editor | None = built[0] if built else None

    def build_editor() -> Editor:
        nonlocal unused
        if built is not None:
            ed, described = built
        else:
            from micebench.preflight import checked

            ed = checked(lambda: runs_on.make_editor(name, options, make_editor), f"editor {name}: building it")
            described = checked(ed.describe, f"editor {name}: describe()")
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
                close_quietly(unused, f"editor {unused.name}")
            _close_all(judges)
            runs_on.close()
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
