"""Click commands over finished runs: ``summary``, ``leaderboard publish|show``, ``gate``, ``report``.

Register them on the main group with :func:`register`. Nothing here imports torch: the commands read
run directories (manifest.json + turns.parquet + images/) and leaderboard CSVs only.
Exit codes: 0 success (gate: pass), 1 gate regression, 2 usage error or unusable input.
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
        from micebench.tables import ResultsError

        try:
            return fn(*args, **kwargs)
        except ResultsError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(USAGE_ERROR)

    return wrapper


_run_dir = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.argument("run_dir", type=_run_dir)
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Pass mark for cumulative success.")
@click.option("--success-metric", "success_metrics", multiple=True, help="Cumulative-success metric (default: *_if).")
@click.option("--bootstrap", "n_boot", type=int, default=1000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--metric", "metrics", multiple=True, help="Show only these metrics (default: all).")
@_results_errors
def summary(run_dir: Path, threshold: float, success_metrics: tuple[str, ...], n_boot: int, seed: int,
            metrics: tuple[str, ...]) -> None:
    """Print a run's tables: overall, per turn, per subset, per task type, cumulative success.

    Every cell is `mean [95% CI] cov X%`: the CI resamples sessions; coverage is scored / applicable turns.
    """
    import pandas as pd

    from micebench import tables

    run = tables.load_run(run_dir)
    df, m = run.turns, run.manifest
    kw = {"n_boot": n_boot, "seed": seed, "metrics": list(metrics) or None}
    judges = ", ".join(f"{j.get('key') or j.get('name')}@{j.get('version', '')}" for j in m.get("judges") or [])
    suite = m.get("suite") or {}
    click.echo(f"run {m.get('run_id', run_dir.name)}: editor {run.label}, suite {suite.get('name')}@"
               f"{suite.get('version')}, judges {judges or '-'}")
    status = df["status"].value_counts().to_dict()
    click.echo(f"{df['session_id'].nunique()} sessions, {len(df)} turns; edit status {status}")
    if not tables.metric_columns(df):
        click.echo("no metric columns: the run has not been judged")
        return
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 60):
        click.echo("\n== overall")
        click.echo(tables.wide(tables.overall(df, **kw).assign(all="all"), "all").to_string(header=False))
        click.echo("\n== per turn")
        click.echo(tables.wide(tables.by_turn(df, **kw), "turn").to_string())
        if "subset" in df.columns and df["subset"].nunique() > 1:
            click.echo("\n== per subset")
            click.echo(tables.wide(tables.by_subset(df, **kw), "subset").to_string())
        click.echo("\n== per task type")
        click.echo(tables.wide(tables.by_task_type(df, **kw), "task_type", rows="group").to_string())
        succ = tables.cumulative_success(df, list(success_metrics) or None, threshold, n_boot=n_boot, seed=seed)
        if len(succ):
            click.echo(f"\n== cumulative session success (every turn up to t scores >= {threshold})")
            succ = succ.assign(cell=succ.apply(
                lambda r: f"{r.success:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] cov {r.coverage:.0%}", axis=1))
            click.echo(succ.pivot(index="metric", columns="turn", values="cell").to_string())


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
    """Add the rows of RUN_DIRS to a leaderboard, replacing older rows with the same key."""
    from micebench import leaderboard as lb
    from micebench import tables

    runs = [tables.load_run(d) for d in run_dirs]
    for run in runs:
        pending = int((run.turns["status"] == "pending").sum())
        if not allow_unfinished and (not run.manifest.get("finished") or pending):
            raise tables.ResultsError(
                f"{run.path}: run is unfinished ({pending} pending turns, finished={run.manifest.get('finished')}); "
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

    from micebench import leaderboard as lb

    board = lb.read_board(file)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    table = lb.ranked(board, sort, cols)
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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@_results_errors
def gate(run_dir: Path, baseline: Path, editor: str | None, config_hash: str | None, tolerance: tuple[str, ...],
         metrics: tuple[str, ...], subsets: tuple[str, ...], n_boot: int, max_coverage_drop: float, seed: int,
         junit: Path | None, as_json: bool) -> None:
    """Fail (exit 1) when RUN_DIR is significantly worse than its baseline row by more than the tolerance,
    or a metric's coverage dropped by more than --max-coverage-drop.

    Exit 0: pass; 1: regression; 2: usage error or incomparable baseline (other suite version or judges).
    """
    from micebench import gate as g
    from micebench import tables

    default, per = g.parse_tolerances(tolerance)
    run = tables.load_run(run_dir)
    result = g.run_gate(run, baseline, editor=editor, config_hash=config_hash, metrics=list(metrics) or None,
                        subsets=list(subsets) or None, tolerance=default, tolerances=per, n_boot=n_boot, seed=seed,
                        max_coverage_drop=max_coverage_drop)
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
@click.option("--max-sessions", type=int, default=None, help="Show at most this many session strips per run.")
@_results_errors
def report(run_dirs: tuple[Path, ...], output: Path, embed: bool, threshold: float, max_sessions: int | None) -> None:
    """Write a static HTML report of one or more runs (two or more runs are shown side by side)."""
    from micebench.results import report as rep

    rep.write_report(list(run_dirs), output, embed=embed, threshold=threshold, max_sessions=max_sessions)
    click.echo(f"wrote {output}")


COMMANDS = (summary, leaderboard, gate, report)


def register(group: click.Group) -> None:
    """Add summary, leaderboard, gate and report to the main ``micebench`` group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
