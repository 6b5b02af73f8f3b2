"""``micebench merge`` and ``micebench export``: joining shards, and Hugging Face datasets out."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from micebench.cli import _pairs, fail


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="The merged run directory (new).")
def merge(runs, out) -> None:
    """Join the run directories of `run --shard K/N` into one run directory.

    The shards must come from the same suite, editor, judges and settings, be finished, and
    together hold every session exactly once; otherwise nothing is written and the exit code
    is 2, with a message naming what is wrong. The merged table equals an unsharded run's.
    """
    from micebench.merge import ShardError, merge_runs

    command_line = " ".join(shlex.quote(a) for a in ["micebench", *sys.argv[1:]])
    try:
        path = merge_runs(list(runs), out, command_line=command_line)
    except ShardError as e:
        fail(str(e))
    click.echo(f"merged {len(runs)} shards into {path}")


@click.command()
@click.argument("source")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Folder for the dataset "
              "(datasets' save_to_disk layout; read it back with load_from_disk or --suite hf:FOLDER).")
@click.option("-S", "suite_opts", multiple=True, metavar="KEY=VALUE", help="Suite option (when SOURCE is a suite).")
@click.option("--image-root", type=click.Path(file_okay=False, exists=True), help="Where the suite's images are.")
@click.option("--push-to-hub", "repo_id", metavar="ORG/NAME", help="Also upload the dataset to the Hugging Face Hub.")
@click.option("--private", is_flag=True, help="With --push-to-hub: make the dataset repository private.")
def export(source, to, suite_opts, image_root, repo_id, private) -> None:
    """Write a suite, or a run's per-turn table with its images, as a Hugging Face dataset.

    \b
    SOURCE is a run directory, or a suite (a registered name such as `mice`, a file or folder):
      micebench export mice -S root=DIR --to mice-hf        # MICE-Bench, metadata + source images
      micebench export runs/<run_id> --to run-hf            # one row per turn, input and output images
    A suite exported this way loads back with `--suite hf:FOLDER`.
    """
    from micebench.export import ExportError, export_run, export_suite, push_to_hub
    from micebench.options import OptionsError
    from micebench.registry import UnknownNameError
    from micebench.rundirs import is_run_dir
    from micebench.suites.base import SuiteError
    from micebench.suites.resolve import load_suite

    try:
        if is_run_dir(source):
            if suite_opts or image_root:
                fail("-S and --image-root apply to suites; a run directory already holds its images")
            ds = export_run(source, to)
        else:
            suite = load_suite(source, _pairs(suite_opts, "-S"), Path(image_root) if image_root else None)
            ds = export_suite(suite, to)
        click.echo(f"wrote {ds.num_rows} rows to {to}")
        if repo_id:
            url = push_to_hub(ds, repo_id, private=private)
            click.echo(f"pushed to {url or repo_id}")
    except (ExportError, SuiteError, OptionsError, UnknownNameError) as e:
        fail(str(e))
