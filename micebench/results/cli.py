"""Click commands over finished runs: ``summary``, ``compare``, ``leaderboard publish|show``, ``gate``,
``report``.

Registered lazily in ``micebench.cli.LAZY_COMMANDS``. Nothing here imports torch: the commands read run
directories (through :func:`micebench.results.run.open_run`) and leaderboard CSVs only.
Exit codes: 0 success (gate: pass), 1 gate regression, 2 usage error or unusable input,
3 gate insufficient (too few paired sessions).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

USAGE_ERROR = 2


def _results_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ResultsError into a one-line message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from micebench.results.run import ResultsError

        try:
            return fn(*args, **kwargs)
        except ResultsError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(USAGE_ERROR)

    return wrapper


_run_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=_run_dir)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "latex", "json"]), default="text",
              show_default=True, help="markdown pastes into a PR comment; latex is a booktabs table for a paper.")
@click.option("--metric", "metrics", multiple=True, help="Show these metric columns (default: every IF / CC / GA "
              "metric, or every metric when there are none).")
@click.option("--all-metrics", is_flag=True, help="Show every metric, not only IF / CC / GA.")
@click.option("--no-turns", is_flag=True, help="Only the mean over all turns, not each turn index.")
@click.option("--detail/--no-detail", default=None, help="Also the per-subset, per-task-type and cumulative-success "
              "tables (text format; default: on for a single run).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Pass mark for cumulative success.")
@click.option("--success-metric", "success_metrics", multiple=True,
              help="Cumulative-success metric (default: every metric whose role is IF).")
@click.option("--bootstrap", "n_boot", type=int, default=1000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@_results_errors
def summary(run_dirs: tuple[Path, ...], fmt: str, metrics: tuple[str, ...], all_metrics: bool, no_turns: bool,
            detail: bool | None, threshold: float, success_metrics: tuple[str, ...], n_boot: int, seed: int) -> None:
    """Summarise one or more runs in one table: editors as rows, each metric per turn with 95% CIs.

    Every cell is `mean [95% CI]` (the CI resamples sessions), with `cov X%` where coverage (scored /
    applicable turns) is below 100%. IF / CC / GA metrics are shown by default (as the judges' metric specs
    say); `--all-metrics` or `--metric` choose others. A note warns when the runs differ in suite or judges.
    """
    from micebench.results.run import open_run
    from micebench.results.summary import MAIN_ROLES, render, run_labels, summarize

    runs = [open_run(d) for d in run_dirs]
    roles = None
    if not metrics and not all_metrics and any(r.metric_columns(MAIN_ROLES) for r in runs):
        roles = MAIN_ROLES
    long = summarize(runs, metrics=list(metrics) or None, roles=roles, per_turn=not no_turns, n_boot=n_boot,
                     seed=seed)
    if fmt == "text":
        labels = run_labels(runs)
        for run in runs:
            m = run.manifest
            status = ", ".join(f"{k} {v}" for k, v in run.status_counts().items())
            click.echo(f"{labels[run.run_id]}: run {run.run_id}, suite {m.suite.name}@{m.suite.version}, judges "
                       f"{m.judges_label}; turns: {status}")
        click.echo("")
    click.echo(render(runs, long, fmt))
    if fmt == "text" and (detail if detail is not None else len(runs) == 1):
        for run in runs:
            _detail(run, list(metrics) or None, list(success_metrics) or None, threshold, n_boot, seed, len(runs) > 1)


def _detail(run, metrics, success_metrics, threshold: float, n_boot: int, seed: int, titled: bool) -> None:
    """The breakdown tables of one run: overall, per turn, per subset, per task type, cumulative success."""
    import pandas as pd

    from micebench.results import aggregate

    df, specs = run.turns(), run.metric_specs()
    if titled:
        click.echo(f"\n#### {run.label}")
    if not specs:
        click.echo("no metric columns: the run has not been judged")
        return
    kw = {"n_boot": n_boot, "seed": seed, "metrics": metrics}
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 60):
        click.echo("\n== overall")
        click.echo(aggregate.wide(aggregate.overall(df, **kw).assign(all="all"), "all").to_string(header=False))
        click.echo("\n== per turn")
        click.echo(aggregate.wide(aggregate.by_turn(df, **kw), "turn").to_string())
        if "subset" in df.columns and df["subset"].nunique() > 1:
            click.echo("\n== per subset")
            click.echo(aggregate.wide(aggregate.by_subset(df, **kw), "subset").to_string())
        click.echo("\n== per task type")
        click.echo(aggregate.wide(aggregate.by_task_type(df, **kw), "task_type", rows="group").to_string())
        succ = aggregate.cumulative_success(df, success_metrics, threshold, specs=specs, n_boot=n_boot, seed=seed)
        if len(succ):
            click.echo(f"\n== cumulative session success (every turn up to t passes the threshold {threshold})")
            succ = succ.assign(cell=succ.apply(
                lambda r: f"{r.success:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] cov {r.coverage:.0%}", axis=1))
            click.echo(succ.pivot(index="metric", columns="turn", values="cell").to_string())


@click.command()
@click.argument("run_a", type=_run_dir)
@click.argument("run_b", type=_run_dir)
@click.option("--metric", "metrics", multiple=True, help="Compare only these metrics (default: all shared ones).")
@click.option("--no-turns", is_flag=True, help="Only over all turns, not each turn index.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Paired bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True)
@_results_errors
def compare(run_a: Path, run_b: Path, metrics: tuple[str, ...], no_turns: bool, fmt: str, n_boot: int,
            seed: int) -> None:
    """Compare RUN_B against RUN_A session by session: B - A per metric (and turn) with a 95% paired
    bootstrap CI, and how many paired sessions B wins or loses. No leaderboard needed."""
    from micebench.results.compare import compare_runs, format_compare

    result = compare_runs(run_a, run_b, metrics=list(metrics) or None, per_turn=not no_turns, n_boot=n_boot,
                          seed=seed)
    click.echo(format_compare(result, fmt))


@click.group()
def leaderboard() -> None:
    """Publish runs into leaderboard CSVs and show them ranked (schema: leaderboards/README.md)."""


@leaderboard.command()
@click.argument("run_dirs", nargs=-1, required=True, type=_run_dir)
@click.option("--to", "board", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Leaderboard CSV to create or update, e.g. leaderboards/synth.csv.")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Pass mark for *_succ_t columns.")
@click.option("--allow-unfinished", is_flag=True, help="Publish runs whose manifest has no 'finished' time.")
@_results_errors
def publish(run_dirs: tuple[Path, ...], board: Path, threshold: float, allow_unfinished: bool) -> None:
    """Add the rows of RUN_DIRS to a leaderboard, replacing older rows with the same key.

    Refuses runs scored with random weights, and runs whose judge protocol differs from the board's rows.
    """
    from micebench.results import leaderboard as lb
    from micebench.results.run import ResultsError, open_run

    runs = [open_run(d) for d in run_dirs]
    for run in runs:
        pending = run.status_counts().get("pending", 0)
        if not allow_unfinished and (not run.manifest.finished or pending):
            raise ResultsError(
                f"{run.root}: run is unfinished ({pending} pending turns, finished={run.manifest.finished}); "
                "finish it or pass --allow-unfinished"
            )
    added, replaced = lb.publish(runs, board, threshold=threshold)
    for row in added:
        click.echo(f"{row['row_id']}  {row['editor']} [{row['editor_config_hash']}] on {row['suite']}@"
                   f"{row['suite_version']}/{row['subset']} ({row['run_id']})")
    click.echo(f"{board}: {len(added)} row(s) written, {len(replaced)} replaced")


@leaderboard.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sort", "sort", default=None, help="Column to rank by (default: the first metric).")
@click.option("--columns", "columns", default=None, help="Comma-separated columns to show.")
@_results_errors
def show(file: Path, sort: str | None, columns: str | None) -> None:
    """Print a leaderboard CSV ranked best-first."""
    import pandas as pd

    from micebench.results import leaderboard as lb

    board = lb.read_board(file)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    specs = lb.read_specs(file)
    table = lb.ranked(board, sort, cols, specs)
    if not specs and lb.metric_names(board):
        click.echo(f"note: no {lb.specs_path(file).name} beside {file}: every metric ranked as higher-is-better",
                   err=True)
    with pd.option_context("display.width", 250, "display.max_columns", 100, "display.max_colwidth", 40):
        click.echo(table.to_string(index=False) if len(table) else f"{file}: no rows")


@click.command()
@click.argument("run_dir", type=_run_dir)
@click.option("--baseline", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Leaderboard CSV holding the baseline row (and its .sessions/ folder).")
@click.option("--editor", default=None, help="Baseline editor name (default: the run's editor).")
@click.option("--config-hash", default=None, help="Baseline editor config hash, when the file has several.")
@click.option("--tolerance", "tolerance", multiple=True, default=("0.02",), show_default=True,
              help="Allowed drop: a number for every metric, or METRIC=NUMBER (repeatable).")
@click.option("--metric", "metrics", multiple=True, help="Gate only these metrics (default: all shared ones).")
@click.option("--subset", "subsets", multiple=True, help="Gate only these subset rows (default: all).")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Paired bootstrap replicates.")
@click.option("--max-coverage-drop", type=float, default=0.05, show_default=True,
              help="Fail a metric whose coverage fell by more than this (use 1 to disable).")
@click.option("--min-pairs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Fewer paired sessions in a subset row: its verdict is 'insufficient' (exit 3), not pass.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@_results_errors
def gate(run_dir: Path, baseline: Path, editor: str | None, config_hash: str | None, tolerance: tuple[str, ...],
         metrics: tuple[str, ...], subsets: tuple[str, ...], n_boot: int, max_coverage_drop: float, min_pairs: int,
         seed: int, junit: Path | None, as_json: bool) -> None:
    """Fail (exit 1) when RUN_DIR is significantly worse than its baseline row by more than the tolerance,
    or a metric's coverage dropped by more than --max-coverage-drop.

    Exit 0: pass; 1: regression; 2: usage error or incomparable baseline (other suite version, judges or
    judge protocol, or judges run on random weights); 3: insufficient, fewer than --min-pairs paired
    sessions in a row (and no regression elsewhere).
    """
    from micebench.results import gate as g
    from micebench.results.run import open_run

    default, per = g.parse_tolerances(tolerance)
    run = open_run(run_dir)
    result = g.run_gate(run, baseline, editor=editor, config_hash=config_hash, metrics=list(metrics) or None,
                        subsets=list(subsets) or None, tolerance=default, tolerances=per, n_boot=n_boot, seed=seed,
                        max_coverage_drop=max_coverage_drop, min_pairs=min_pairs)
    if junit:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(g.junit_xml(result))
    click.echo(result.to_json() if as_json else g.format_table(result))
    sys.exit(result.exit_code)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=_run_dir)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file.")
@click.option("--embed", is_flag=True, help="Embed images as small thumbnails (a self-contained file).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="A turn scoring below fails.")
@click.option("--max-sessions", type=int, default=None, help="Show at most this many sessions (all runs).")
@_results_errors
def report(run_dirs: tuple[Path, ...], output: Path, embed: bool, threshold: float, max_sessions: int | None) -> None:
    """Write a static HTML report of one or more runs (two or more runs are shown side by side)."""
    from micebench.results import report as rep
    from micebench.results.run import open_run

    runs = [open_run(d) for d in run_dirs]
    rep.write_report(runs, output, embed=embed, threshold=threshold, max_sessions=max_sessions)
    click.echo(f"wrote {output}")


COMMANDS = (summary, compare, leaderboard, gate, report)


def register(group: click.Group) -> None:
    """Add summary, compare, leaderboard, gate and report to a click group (the main CLI loads them lazily)."""
    for cmd in COMMANDS:
        group.add_command(cmd)
