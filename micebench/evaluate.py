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
from micebench.executors import ExecutorSpec, make_executor
from micebench.judges.base import Judge
from micebench.results.turn_table import export_turn_table
from micebench.runner import EditSummary, Runner, RunSettings
from micebench.store import RunStore, RunStoreError
from micebench.suites.base import SuiteData


@dataclass
class RunResult:
    run_dir: Path
    edit: EditSummary
    judged: dict[str, int] = field(default_factory=dict)

    @property
    def failed_turns(self) -> int:
        return self.edit.errors + self.edit.skipped


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
    """Judges from ``(name or class, options)`` pairs, names, classes or ready instances (kept as given)."""
    from micebench.options import OptionsError, build_config

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
        judge = cls(config)
        judge.name = name
        judges.append(judge)
    return judges


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
    """
    settings = settings or RunSettings()
    # Resolve the editor and validate its config now (a typo fails before anything is written); the
    # editor itself is built only when there is something to edit.
    _, editor_cls, instance = resolve_adapter("editors", editor)
    if instance is None:
        editor_options = with_seed(editor_cls, editor_options, seed)
    name, _, editor_config, make_editor = editor_factory(editor, editor_options)
    judge_objs = build_judges(judges, seed)
    runs_on = make_executor(executor)
    if instance is not None and runs_on.name != "local":
        from micebench.errors import SetupError

        raise SetupError(f"--executor {runs_on.name} builds the editor on each worker from its name and options: "
                         f"give a registered name, module:Class or a class, not an instance ({name})")
    runs_on.setup()  # a cluster that is not there stops the run here, before a run directory exists
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
        "command_line": command_line or " ".join(sys.argv),
        "seed": seed,
        "batch_size": settings.batch_size,
        "turn_timeout": settings.turn_timeout,
        "suite": {
            "name": suite.name,
            "version": suite.version,
            "source": suite.source,
            "options": suite.options,
            "digest": suite.digest(),
            "n_sessions": len(suite.sessions),
        },
        "editor": {"name": name, "config": editor_config, "config_hash": config_hash(editor_config)},
        "judges": [describe_judge(j) for j in judge_objs],
        "executor": runs_on.describe(),
        "shard": shard,
    }
    try:
        store = RunStore.create(Path(out) / run_id, manifest, suite.sessions)
    except BaseException:
        runs_on.close()
        raise
    return _execute(store, (name, editor_config, make_editor), judge_objs, settings, runs_on)


def resume_run(run_dir: str | Path, progress: bool = True, executor: ExecutorSpec | None = None) -> RunResult:
    """Finish an interrupted run: edit what is missing, judge what is unjudged, export.

    It runs on the executor recorded in the manifest unless ``executor`` says otherwise (e.g. a
    Ray run finished on one machine); the manifest then lists the executors the run has used.
    """
    from micebench.results.run import RunManifest

    store = RunStore.open(run_dir)
    store.repair()
    m = RunManifest.model_validate(store.read_manifest())
    settings = RunSettings(batch_size=m.batch_size or 8, turn_timeout=m.turn_timeout, progress=progress)
    judges = build_judges([(j.name, j.config) for j in m.judges])
    for j, recorded in zip(judges, m.judges, strict=True):
        if j.key != recorded.key:
            raise RunStoreError(
                f"{run_dir}: judge {j.name!r} is now configured differently from when the run started "
                f"(key {j.key} vs {recorded.key}); its code or defaults changed. "
                f"Use `micebench score {run_dir} --judge {j.name}` to score with the new version."
            )
    _, _, _, make_editor = editor_factory(m.editor.name, m.editor.config)
    raw = store.read_manifest()
    runs_on = make_executor(executor or ExecutorSpec.from_manifest(raw.get("executor")))
    runs_on.setup()
    now = runs_on.describe()
    if raw.get("executor") and now != raw["executor"]:
        store.update_manifest(executor=now, previous_executors=[*raw.get("previous_executors", []), raw["executor"]])
    return _execute(store, (m.editor.name, m.editor.config, make_editor), judges, settings, runs_on)


def score_run(run_dir: str | Path, judges: list[Any], settings: RunSettings,
              executor: ExecutorSpec | None = None) -> RunResult:
    """Score a run's stored images with (other) judges, without editing again."""
    store = RunStore.open(run_dir)
    manifest = store.read_manifest()
    judge_objs = build_judges(judges, manifest.get("seed"))
    entries = [j for j in manifest.get("judges", []) if j["name"] not in {x.name for x in judge_objs}]
    store.update_manifest(judges=entries + [describe_judge(j) for j in judge_objs])
    runs_on = make_executor(executor)
    runs_on.setup()
    try:
        judged = Runner(store, settings, runs_on).judge(judge_objs)
    finally:
        runs_on.close()
    for j in judge_objs:
        j.close()
    export_turn_table(store)
    edit = EditSummary.of(store.turn_records().values())
    store.close()
    return RunResult(Path(run_dir), edit, judged)


def _execute(store: RunStore, editor: tuple[str, dict[str, Any], Any], judges: list[Judge], settings: RunSettings,
             runs_on: Any) -> RunResult:
    runner = Runner(store, settings, runs_on)
    name, options, make_editor = editor

    def build_editor():
        ed = runs_on.make_editor(name, options, make_editor)
        # What the editor says about itself (e.g. a hash of its prompt texts) joins the manifest,
        # and the config hash covers it, so a leaderboard row changes when the editor does.
        described = ed.describe()
        entry = {**store.read_manifest()["editor"], "describe": described, "config_hash": config_hash(described)}
        store.update_manifest(editor=entry)
        return ed

    try:
        edit = runner.edit(build_editor)
        judged = runner.judge(judges)
    finally:
        for j in judges:
            j.close()
        runs_on.close()
        # Whatever happened, the table reflects everything recorded so far.
        export_turn_table(store)
    store.update_manifest(
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        counts={"ok": edit.done, "error": edit.errors, "skipped": edit.skipped},
    )
    store.close()
    return RunResult(store.root, edit, judged)
