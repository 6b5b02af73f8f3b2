"""The ``micebench`` command line. Heavy modules are imported inside commands, so
``micebench --help`` stays fast and never imports torch."""

from __future__ import annotations

import importlib
import importlib.util
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from micebench import __version__

# Commands that live in their own modules, imported only when used: name -> "module:attr".
LAZY_COMMANDS = {
    "judge-check": "micebench.cli_judgecheck:judge_check",
    "summary": "micebench.results.cli:summary",
    "compare": "micebench.results.cli:compare",
    "leaderboard": "micebench.results.cli:leaderboard",
    "gate": "micebench.results.cli:gate",
    "report": "micebench.results.cli:report",
    "merge": "micebench.cli_scale:merge",
    "export": "micebench.cli_scale:export",
    "doctor": "micebench.cli_doctor:doctor",
}

EXIT_OK, EXIT_FAILED_TURNS, EXIT_USAGE = 0, 1, 2


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._available()])

    def _available(self) -> list[str]:
        out = []
        for name, target in LAZY_COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                out.append(name)
        return out

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name in self._available():
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


def fail(message: str, code: int = EXIT_USAGE) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="micebench")
def main() -> None:
    """micebench: evaluate multi-turn in-context image editors.

    \b
    Quick start (no GPU, no downloads):
      micebench run --suite synth --model synth-context
    Then look at the per-turn table in runs/<run_id>/turns.csv.
    """
    import warnings

    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """micebench's own warnings (e.g. "IC-CoT uses the paraphrase") as one console line; others as Python prints
    them."""
    if issubclass(category, UserWarning) and f"{Path('micebench')}" in str(filename):
        click.secho(f"warning: {message}", fg="yellow", err=True)
    else:
        import warnings

        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, Any]:
    from micebench.options import OptionsError, parse_pairs

    try:
        return parse_pairs(values, flag)
    except OptionsError as e:
        fail(str(e))
        raise  # unreachable: fail() exits


def _judge_specs(judges: tuple[str, ...], judge_opts: tuple[str, ...], judge_configs: tuple[str, ...]) -> list:
    """Combine --judge, -J and --judge-config into [(name, options)], explicit -J winning."""
    from micebench.api import judge_specs
    from micebench.options import OptionsError

    try:
        return judge_specs(judges, _pairs(judge_opts, "-J"), judge_configs)
    except OptionsError as e:
        fail(str(e))
        raise  # unreachable: fail() exits


@main.command()
@click.option("--suite", "suite_spec", metavar="SUITE", help="Registered suite name, .yaml/.jsonl file, or folder "
              "with test_metadata.jsonl.  [default: synth]")
@click.option("-S", "suite_opts", multiple=True, metavar="KEY=VALUE", help="Suite option, e.g. -S n=50 -S turns=5.")
@click.option("--model", "models", multiple=True, metavar="EDITOR",
              help="Editor name (see `micebench list editors`); repeat to run several, one run directory each.")
@click.option("-M", "model_opts", multiple=True, metavar="KEY=VALUE", help="Editor option (validated by the editor).")
@click.option("--model-config", type=click.Path(dir_okay=False), help="YAML file of editor options (-M wins).")
@click.option("--judge", "judges", multiple=True, metavar="JUDGE",
              help="Judge name; repeatable.  [default: scene+pixel on synth, pixel elsewhere]")
@click.option("-J", "judge_opts", multiple=True, metavar="[JUDGE.]KEY=VALUE", help="Judge option.")
@click.option("--judge-config", "judge_configs", multiple=True, type=click.Path(dir_okay=False),
              help="YAML judge options; a 'judge: NAME' key says which judge it configures.")
@click.option("--no-judge", is_flag=True, help="Edit only; score later with `micebench score`.")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives one run directory per editor.")
@click.option("--run-name", help="Name of the run directory (default: time-suite-editor-random).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N sessions.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--turn-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="A turn that takes longer becomes an error row.")
@click.option("--image-root", type=click.Path(file_okay=False, exists=True), help="Where the suite's images are.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed passed to suites, editors and judges "
              "that take one.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="Finish an interrupted run directory (other options come from its manifest; "
              "--executor and its options may move it elsewhere).")
@click.option("--judge-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="A judge call taking longer than this per turn is unscored (a hung judge is stopped).")
@click.option("--isolate", is_flag=True, help="Run the editor in a child process that is killed on --turn-timeout "
              "and restarted (costs a reload per restart; see the README).")
@click.option("--dry-run", is_flag=True, help="Only build and check the editor and judges (the preflight) and say "
              "what would run; write nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--executor", type=click.Choice(["local", "ray"]), help="Where editors and judges run: in this "
              "process, or as Ray actors (pip install 'micebench[ray]').  [default: local]")
@click.option("--workers", type=click.IntRange(min=1), help="Ray: editor/judge actors.  [default: 1]")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), help="Ray: GPUs per actor.  [default: 0]")
@click.option("--ray-address", metavar="ADDR", help="Ray: an existing cluster (HOST:PORT, ray://..., auto); "
              "default: start a local one.")
@click.option("--shard", metavar="K/N", help="Run only shard K of N (sessions split by a hash of their id); "
              "join the shards with `micebench merge`.")
def run(suite_spec, suite_opts, models, model_opts, model_config, judges, judge_opts, judge_configs, no_judge, out,
        run_name, limit, batch_size, turn_timeout, image_root, seed, resume_dir, quiet, executor, workers,
        gpus_per_worker, ray_address, shard, judge_timeout, isolate, dry_run) -> None:
    """Edit every turn of a suite with an editor, then score it with judges.

    Writes runs/<run_id>/ (manifest.json, run.sqlite, images/, turns.parquet, turns.csv) and prints
    IF / CC / GA per turn index. Exit code: 0 all turns edited, 1 some turns failed (see the
    table's status and error columns), 2 bad usage or a malformed suite.
    """
    from micebench import api
    from micebench.errors import SetupError
    from micebench.merge import ShardError
    from micebench.options import OptionsError
    from micebench.registry import UnknownNameError
    from micebench.store import RunStoreError
    from micebench.suites.base import SuiteError

    spec = _executor_spec(executor, workers, gpus_per_worker, ray_address)
    if resume_dir and dry_run:
        fail("--dry-run checks a new run; `micebench run --resume` checks what is left before it starts")
    if resume_dir:
        if shard:
            fail("--shard cannot change on --resume: a shard's run directory already holds its sessions")
        try:
            command_line = " ".join(shlex.quote(a) for a in ["micebench", *sys.argv[1:]])
            runs = [api.resume(resume_dir, progress=not quiet, executor=spec, command_line=command_line)]
        except (RunStoreError, UnknownNameError, OptionsError, SetupError) as e:
            fail(str(e))
        _print_summaries(runs)
        sys.exit(_exit_code(runs))
    if not models:
        fail("give an editor with --model (see `micebench list editors`)")
    try:
        editor_opts = api.merge_options(model_config, _pairs(model_opts, "-M"))
        command_line = " ".join(shlex.quote(a) for a in ["micebench", *sys.argv[1:]])
        runs = api.run(suite_spec or "synth", list(models), [] if no_judge else (list(judges) or None),
                       judge_options=_pairs(judge_opts, "-J"), judge_config_files=judge_configs,
                       suite_options=_pairs(suite_opts, "-S"),
                       editor_options=editor_opts, out=out, run_name=run_name, limit=limit, batch_size=batch_size,
                       turn_timeout=turn_timeout, image_root=image_root, seed=seed, progress=not quiet,
                       command_line=command_line, executor=spec, shard=shard, judge_timeout=judge_timeout,
                       isolate=isolate, dry_run=dry_run)
    except (SuiteError, OptionsError, UnknownNameError, RunStoreError, SetupError, ShardError) as e:
        fail(str(e))
    if dry_run:
        click.echo("\n\n".join(runs if isinstance(runs, list) else [runs]))
        sys.exit(EXIT_OK)
    _print_summaries(runs)
    sys.exit(_exit_code(runs))


def _executor_spec(name, workers, gpus_per_worker, ray_address):
    """The executor options as a spec, or None when none was given (local; on --resume: as recorded)."""
    if name is None and workers is None and gpus_per_worker is None and ray_address is None:
        return None
    from micebench.executors import ExecutorSpec

    try:
        return ExecutorSpec(name=name or "local", workers=workers or 1, gpus_per_worker=gpus_per_worker or 0.0,
                            address=ray_address)
    except ValueError as e:
        fail(str(e))


def _exit_code(runs) -> int:
    """1 when any turn of any run failed (error, skipped or left pending), else 0."""
    return EXIT_FAILED_TURNS if any(r.failed_turns for r in runs) else EXIT_OK


def _print_summaries(runs) -> None:
    from micebench.results.quicklook import editors_table, turn_summary

    for r in runs:
        click.echo(turn_summary(r))
        click.echo("")
    if len(runs) > 1:
        click.secho("All editors (mean over scored turns):", bold=True)
        click.echo(editors_table(runs))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--judge", "judges", multiple=True, required=True, metavar="JUDGE", help="Judge name; repeatable.")
@click.option("-J", "judge_opts", multiple=True, metavar="[JUDGE.]KEY=VALUE", help="Judge option.")
@click.option("--judge-config", "judge_configs", multiple=True, type=click.Path(dir_okay=False))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--judge-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="A judge call taking longer than this per turn is unscored.")
@click.option("-q", "--quiet", is_flag=True)
def score(run_dir, judges, judge_opts, judge_configs, batch_size, judge_timeout, quiet) -> None:
    """Score a run's stored images again (another judge, a new judge version) without editing.

    Judgements already stored for the same judge configuration are kept, so an interrupted
    scoring run picks up where it stopped. Exit code 2 when a judge cannot work (checked before
    scoring) or fails on every turn the same way.
    """
    from micebench import api
    from micebench.errors import SetupError
    from micebench.options import OptionsError
    from micebench.registry import UnknownNameError
    from micebench.store import RunStoreError

    command_line = " ".join(shlex.quote(a) for a in ["micebench", *sys.argv[1:]])
    try:
        run = api.score(run_dir, _judge_specs(judges, judge_opts, judge_configs), batch_size=batch_size,
                        progress=not quiet, judge_timeout=judge_timeout, command_line=command_line)
    except (RunStoreError, UnknownNameError, OptionsError, SetupError) as e:
        fail(str(e))
    _print_summaries([run])


@main.command("list")
@click.argument("kind", type=click.Choice(["editors", "judges", "suites"]))
@click.option("--paths", is_flag=True, help="Also show where each adapter lives (module:attr).")
def list_cmd(kind: str, paths: bool) -> None:
    """Show installed editors, judges or suites (third-party adapters included): what each is, and
    what it needs to run (extras, a GPU, weights, keys)."""
    from micebench.registry import describe

    rows = describe(kind, detailed=True)
    width = max((len(r.name) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r.name.ljust(width)}  {r.description}")
        pad = " " * (width + 2)
        needs = "not stated" if r.needs is None else ", ".join(r.needs) or "nothing beyond micebench"
        click.echo(f"{pad}needs: {needs}")
        if paths:
            click.echo(f"{pad}from: {r.target}")


@main.command()
@click.argument("path")
@click.option("-S", "suite_opts", multiple=True, metavar="KEY=VALUE", help="Suite option.")
@click.option("--image-root", type=click.Path(file_okay=False, exists=True))
@click.option("--no-images", is_flag=True, help="Do not require the source images to exist.")
def validate(path, suite_opts, image_root, no_images) -> None:
    """Check a suite (file, folder or registered name) and say what is wrong, where.

    Exit code 0 when valid, 2 otherwise.
    """
    from collections import Counter

    from micebench.options import OptionsError
    from micebench.registry import UnknownNameError
    from micebench.suites.base import SuiteError
    from micebench.suites.resolve import load_suite

    try:
        suite = load_suite(path, _pairs(suite_opts, "-S"), Path(image_root) if image_root else None,
                           check_images=not no_images)
    except (SuiteError, OptionsError, UnknownNameError) as e:
        fail(str(e))
    turns = sum(len(s.turns) for s in suite.sessions)
    click.echo(f"{suite.name} (version {suite.version}): {len(suite.sessions)} sessions, {turns} turns")
    by_subset = Counter(s.subset or "-" for s in suite.sessions)
    for subset, n in sorted(by_subset.items()):
        click.echo(f"  subset {subset}: {n} sessions")
        max_t = max(len(s.turns) for s in suite.sessions if (s.subset or "-") == subset)
        for t in range(max_t):
            c = Counter(s.turns[t].task_type for s in suite.sessions
                        if (s.subset or "-") == subset and t < len(s.turns))
            click.echo(f"    turn {t + 1}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    invalid = [(s.id, t + 1, turn.metadata["invalid"]) for s in suite.sessions for t, turn in enumerate(s.turns)
               if "invalid" in turn.metadata]
    if invalid:
        click.echo(f"  {len(invalid)} turns flagged invalid (kept, but they cannot be followed), e.g.:")
        for sid, t, why in invalid[:3]:
            click.echo(f"    {sid} turn {t}: {why}")


@main.command()
def schema() -> None:
    """Print the JSON Schema of YAML suite files."""
    import json

    from micebench.suites.yaml_suite import suite_json_schema

    click.echo(json.dumps(suite_json_schema(), indent=2))


if __name__ == "__main__":
    main()
