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
from micebench.executors import ExecutorSpec, make_executor
from micebench.judges.base import Judge, create_judge
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


def build_judges(specs: list[tuple[str, dict[str, Any]]], seed: int | None = None) -> list[Judge]:
    from micebench import registry

    judges = []
    for name, opts in specs:
        cls = registry.load("judges", name)
        judges.append(create_judge(name, with_seed(cls, opts, seed)))
    return judges


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
    executor: ExecutorSpec | None = None,
    shard: dict[str, Any] | None = None,
) -> RunResult:
    """Create a run directory for ``suite`` x ``editor``, edit every turn, then judge.

    ``executor`` says where editors and judges run (default: here, see micebench.executors);
    ``shard`` (from :func:`micebench.merge.shard_suite`) marks the run as one shard of a larger suite.
    """
    from micebench import registry

    settings = settings or RunSettings()
    editor_cls = registry.load("editors", editor)  # fail on a typo before anything is written
    editor_options = with_seed(editor_cls, editor_options, seed)
    # Build (and so validate) the editor config now; the editor itself is built only when needed.
    from micebench.options import build_config

    editor_config = build_config(editor_cls.Config, editor_options, where=f"editor {editor!r}").model_dump(mode="json")
    judge_objs = build_judges(judges, seed)
    runs_on = make_executor(executor)
    runs_on.setup()  # a cluster that is not there stops the run here, before a run directory exists
    run_id = run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{suite.name}-{editor}-{secrets.token_hex(2)}".replace(
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
        "editor": {"name": editor, "config": editor_config, "config_hash": config_hash(editor_config)},
        "judges": [describe_judge(j) for j in judge_objs],
        "executor": runs_on.describe(),
        "shard": shard,
    }
    try:
        store = RunStore.create(Path(out) / run_id, manifest, suite.sessions)
    except BaseException:
        runs_on.close()
        raise
    return _execute(store, editor, editor_options, judge_objs, settings, runs_on)


def resume_run(run_dir: str | Path, progress: bool = True, executor: ExecutorSpec | None = None) -> RunResult:
    """Finish an interrupted run: edit what is missing, judge what is unjudged, export.

    It runs on the executor recorded in the manifest unless ``executor`` says otherwise (e.g. a
    Ray run finished on one machine); the manifest then lists the executors the run has used.
    """
    store = RunStore.open(run_dir)
    store.repair()
    m = store.read_manifest()
    settings = RunSettings(batch_size=m.get("batch_size") or 8, turn_timeout=m.get("turn_timeout"), progress=progress)
    judges = build_judges([(j["name"], j.get("config", {})) for j in m.get("judges", [])])
    for j, recorded in zip(judges, m.get("judges", []), strict=True):
        if j.key != recorded.get("key"):
            raise RunStoreError(
                f"{run_dir}: judge {j.name!r} is now configured differently from when the run started "
                f"(key {j.key} vs {recorded.get('key')}); its code or defaults changed. "
                f"Use `micebench score {run_dir} --judge {j.name}` to score with the new version."
            )
    spec = executor or ExecutorSpec.from_manifest(m.get("executor"))
    runs_on = make_executor(spec)
    runs_on.setup()
    now = runs_on.describe()
    if m.get("executor") and now != m["executor"]:
        store.update_manifest(executor=now, previous_executors=[*m.get("previous_executors", []), m["executor"]])
    return _execute(store, m["editor"]["name"], m["editor"]["config"], judges, settings, runs_on)


def score_run(run_dir: str | Path, judges: list[tuple[str, dict[str, Any]]], settings: RunSettings,
              executor: ExecutorSpec | None = None) -> RunResult:
    """Score a run's stored images with (other) judges, without editing again."""
    store = RunStore.open(run_dir)
    judge_objs = build_judges(judges, store.read_manifest().get("seed"))
    m = store.read_manifest()
    entries = [j for j in m.get("judges", []) if j["name"] not in {x.name for x in judge_objs}]
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


def _execute(store: RunStore, editor: str, editor_options: dict[str, Any], judges: list[Judge],
             settings: RunSettings, runs_on: Any) -> RunResult:
    runner = Runner(store, settings, runs_on)

    def build_editor():
        ed = runs_on.make_editor(editor, editor_options)
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
