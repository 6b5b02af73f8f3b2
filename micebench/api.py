"""The Python API: what ``micebench run`` and ``micebench score`` do, callable from a notebook.

    import micebench
    run = micebench.run(suite="synth", editors="oracle", judges=["scene"], suite_options={"n": 4}, out="runs")
    run.summary()                                          # mean, 95% CI, coverage per metric and turn
    runs = micebench.run(suite="synth", editors=["oracle", "identity"], out="runs")   # one Run each
    micebench.score(run, judges=["pixel"])                 # more judges on the stored images
    micebench.open_run("runs/<run_id>").turns()            # any run directory, later

Suites, editors and judges may be given as registered names, ``module:Class`` strings, classes or
instances. The command line is a thin shell over this module: it parses flags, calls these functions
and prints. Errors are raised as :class:`~micebench.options.OptionsError` (bad options),
:class:`~micebench.registry.UnknownNameError`, :class:`~micebench.suites.base.SuiteError` or
:class:`~micebench.store.RunStoreError`, each with a message that names what is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from micebench.results.run import Run
    from micebench.suites.base import SuiteData

#: Judges used when ``judges`` is None: the synthetic suite's exact scene judge and the pixel judge.
DEFAULT_JUDGES = {"synth": ("scene", "pixel")}
FALLBACK_JUDGES = ("pixel",)


def default_judges(suite_name: str) -> tuple[str, ...]:
    """The judges a run of ``suite_name`` gets when none are named (pixel alone outside synth: it
    needs no model, and says so honestly that it is not an IF judge)."""
    return DEFAULT_JUDGES.get(suite_name, FALLBACK_JUDGES)


def merge_options(*layers: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """Merge option layers, later ones winning: mappings, or YAML files of a mapping (e.g. the CLI's
    ``--model-config`` under its ``-M`` pairs)."""
    from micebench.options import read_yaml_mapping

    out: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        out.update(read_yaml_mapping(layer) if isinstance(layer, (str, Path)) else dict(layer))
    return out


def judge_specs(
    judges: Iterable[Any],
    options: Mapping[str, Any] | None = None,
    config_files: Iterable[str | Path] = (),
) -> list[Any]:
    """``(judge, options)`` pairs from judge names (or classes, instances, pairs), flat options and YAML files.

    ``options`` keys are ``JUDGE.key`` (for one judge of several) or plain ``key`` (only with one judge);
    a YAML file names its judge with a ``judge:`` key (optional with one judge). Explicit ``options``
    win over files. Classes and instances pass through; an instance takes no options.
    """
    from micebench.options import OptionsError

    order: list[Any] = []
    specs: dict[str, dict[str, Any]] = {}
    for j in judges:
        target, opts = j if isinstance(j, tuple) else (j, {})
        key = target if isinstance(target, str) else getattr(target, "name", "") or repr(target)
        if key not in specs:
            order.append((key, target))
            specs[key] = {}
        specs[key].update(opts)
    names = [k for k, _ in order]
    for path in config_files:
        data = merge_options(path)
        name = data.pop("judge", None)
        if name is None:
            if len(names) != 1:
                raise OptionsError(f"{path}: add a 'judge: NAME' key to say which judge this file configures")
            name = names[0]
        if name not in specs:
            order.append((name, name))
            names.append(name)
            specs[name] = {}
        specs[name].update(data)
    for key, value in (options or {}).items():
        prefix, dot, rest = key.partition(".")
        if dot and prefix in specs:
            specs[prefix][rest] = value
        elif len(specs) == 1:
            specs[names[0]][key] = value
        else:
            raise OptionsError(
                f"-J {key}=...: with several judges, write -J JUDGE.{key}=VALUE (judges: {', '.join(names)})"
            )
    return [(target, specs[key]) if specs[key] or isinstance(target, (str, type)) else target
            for key, target in order]


def load_suite_data(
    suite: str | SuiteData,
    options: Mapping[str, Any] | None = None,
    *,
    image_root: str | Path | None = None,
    limit: int | None = None,
    seed: int | None = 0,
) -> SuiteData:
    """A suite by name or path (or a loaded :class:`SuiteData`), cut to its first ``limit`` sessions."""
    from micebench.suites.base import SuiteData, SuiteError
    from micebench.suites.resolve import load_suite

    if isinstance(suite, SuiteData):
        if options:
            raise SuiteError(f"suite {suite.name!r} is already loaded: give its options when you load it")
        data = suite
    else:
        data = load_suite(str(suite), dict(options or {}), Path(image_root) if image_root else None, seed=seed)
    if limit is not None:
        if limit < 1:
            raise SuiteError(f"limit must be at least 1, got {limit}")
        data = SuiteData(data.name, data.version, data.sessions[:limit], data.source, {**data.options, "limit": limit})
    return data


def _as_list(value: Any) -> tuple[list[Any], bool]:
    """(items, was it a sequence): a str, class or instance is one item."""
    if isinstance(value, (list, tuple)):
        return list(value), True
    return [value], False


def run(
    suite: str | SuiteData = "synth",
    editors: Any = None,
    judges: Sequence[Any] | None = None,
    *,
    suite_options: Mapping[str, Any] | None = None,
    editor_options: Mapping[str, Any] | str | Path | None = None,
    judge_options: Mapping[str, Any] | None = None,
    judge_config_files: Sequence[str | Path] = (),
    out: str | Path = "runs",
    run_name: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    turn_timeout: float | None = None,
    image_root: str | Path | None = None,
    seed: int | None = 0,
    progress: bool = True,
    command_line: str | None = None,
    judge_timeout: float | None = None,
    isolate: bool = False,
    dry_run: bool = False,
    executor: Any = None,
    shard: str | tuple[int, int] | None = None,
) -> Run | list[Run]:
    """Edit every turn of ``suite`` with each editor, score with ``judges``; one run directory per editor.

    ``editors``: one editor (a name, ``module:Class``, class or instance) gives one :class:`Run`; a list
    gives a list of runs, in order. ``judges``: names, ``module:Class``, classes, instances or ``(judge,
    options)`` pairs; None means the suite's defaults (:func:`default_judges`), ``[]`` no judging (score
    later with :func:`score`). ``editor_options`` (a mapping or a YAML file) go to every editor built from a
    name or class; ``judge_options`` are flat (``{"votes": 2}`` with one judge) or per judge
    (``{"mice.votes": 2}``); ``judge_config_files`` are YAML files of judge options (a ``judge:`` key names
    the judge), under ``judge_options``. ``limit`` keeps the first N sessions. ``executor`` (a
    :class:`micebench.executors.ExecutorSpec`, e.g. ``ExecutorSpec("ray", workers=8, gpus_per_worker=1)``)
    says where editors and judges run; ``shard`` (``"K/N"`` or ``(K, N)``) runs only that shard of the
    sessions (join the shards with ``micebench merge``).
    """
    from micebench.evaluate import start_run
    from micebench.options import OptionsError
    from micebench.results.run import open_run
    from micebench.runner import RunSettings

    editor_list, several = _as_list(editors)
    if editors is None or not editor_list:
        raise OptionsError("give at least one editor (see `micebench list editors`)")
    if run_name and len(editor_list) > 1:
        raise OptionsError("run_name names one run directory; with several editors, leave it out")
    data = load_suite_data(suite, suite_options, image_root=image_root, limit=limit, seed=seed)
    shard_info = None
    if shard is not None:
        from micebench.merge import parse_shard, shard_suite

        data, shard_info = shard_suite(data, *(parse_shard(shard) if isinstance(shard, str) else shard))
    opts = merge_options(editor_options)
    if judges is not None and not judges and (judge_options or judge_config_files):
        raise OptionsError("judge options given, but no judges (judges=[] / --no-judge)")
    chosen = default_judges(data.name) if judges is None else judges
    specs = judge_specs(chosen, judge_options, judge_config_files) if chosen else []
    settings = RunSettings(batch_size=batch_size, turn_timeout=turn_timeout, progress=progress,
                           judge_timeout=judge_timeout, isolate=isolate)  # fmt: skip
    line = command_line if command_line is not None else "python: micebench.run(...)"
    runs = []
    for editor in editor_list:
        if several and progress:
            label = editor if isinstance(editor, str) else getattr(editor, "__name__", type(editor).__name__)
            print(f"== {label}", file=sys.stderr, flush=True)
        if dry_run:  # only the preflight: a str per editor saying what would run
            from micebench.preflight import dry_run as plan

            runs.append(plan(data, editor, opts if isinstance(editor, (str, type)) else {}, specs, out=str(out),
                             run_name=run_name, settings=settings, seed=seed))  # fmt: skip
            continue
        result = start_run(data, editor, opts if isinstance(editor, (str, type)) else {}, specs, out=out,
                           run_name=run_name, settings=settings, seed=seed, command_line=line,
                           executor=executor, shard=shard_info)
        runs.append(open_run(result.run_dir))
    return runs if several else runs[0]


def score(
    run: Run | str | Path,
    judges: Sequence[Any],
    *,
    judge_options: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    judge_timeout: float | None = None,
    command_line: str = "",
) -> Run:
    """Score a run's stored images with ``judges`` (same forms as :func:`run`), without editing again.

    Judgements already stored for the same judge configuration are kept. Returns the run, re-read.
    """
    from micebench.evaluate import score_run
    from micebench.options import OptionsError
    from micebench.results.run import Run, open_run
    from micebench.runner import RunSettings

    root = run.root if isinstance(run, Run) else Path(run)
    if not judges:
        raise OptionsError("give at least one judge to score with")
    settings = RunSettings(batch_size=batch_size, progress=progress, judge_timeout=judge_timeout)
    score_run(root, judge_specs(judges, judge_options), settings, command_line=command_line)
    return open_run(root)


def resume(run: Run | str | Path, *, progress: bool = True, executor: Any = None, command_line: str = "") -> Run:
    """Finish an interrupted run (all settings come from its manifest, the executor too unless
    ``executor`` is given); returns it, re-read."""
    from micebench.evaluate import resume_run
    from micebench.results.run import Run, open_run

    root = run.root if isinstance(run, Run) else Path(run)
    resume_run(root, progress=progress, executor=executor, command_line=command_line)
    return open_run(root)


def open_run(path: str | Path) -> Run:
    """Open a run directory: :func:`micebench.results.run.open_run`."""
    from micebench.results.run import open_run as _open

    return _open(path)


def summary(runs: Run | str | Path | Sequence[Run | str | Path], fmt: str | None = None, **kw: Any) -> Any:
    """The summary table of one or more runs: a long DataFrame (``fmt=None``; see
    :func:`micebench.results.summary.summarize` for the keywords), or the rendered text for ``fmt`` in
    ``text``, ``markdown``, ``latex``, ``json`` (editors as rows, each metric per turn with 95% CIs)."""
    from micebench.results.run import open_run as _open
    from micebench.results.summary import MAIN_ROLES, render, summarize

    items, _ = _as_list(runs)
    opened = [_open(r) for r in items]
    if "roles" not in kw and "metrics" not in kw and any(r.metric_columns(MAIN_ROLES) for r in opened):
        kw["roles"] = MAIN_ROLES
    long = summarize(opened, **kw)
    return long if fmt is None else render(opened, long, fmt)


def compare(run_a: Run | str | Path, run_b: Run | str | Path, **kw: Any) -> Any:
    """B against A, session by session (:func:`micebench.results.compare.compare_runs`): a CompareResult
    with ``.frame()``, ``.to_json()``."""
    from micebench.results.compare import compare_runs

    return compare_runs(run_a, run_b, **kw)
