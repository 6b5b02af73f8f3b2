"""``micebench judge-check``: how far does a judge agree with the synthetic suite's exact truth?"""

from __future__ import annotations

import click


@click.command("judge-check")
@click.option("--judge", "judge_name", required=True, help="Registered judge name (scene, pixel, clip, mice...).")
@click.option("-J", "judge_pairs", multiple=True, metavar="KEY=VALUE", help="Judge option (repeatable).")
@click.option("--judge-config", type=click.Path(exists=True, dir_okay=False), help="YAML file of judge options.")
@click.option("--suite", "suite_name", default="synth", show_default=True, help="Only 'synth' has exact truth.")
@click.option("-S", "suite_pairs", multiple=True, metavar="KEY=VALUE", help="Suite option, e.g. -S n=50.")
@click.option("--map", "map_pairs", multiple=True, metavar="IF=METRIC",
              help="Which judge metric stands for if/cc/ga (default: metrics named if, cc, ga).")
@click.option("--threshold", "thr_pairs", multiple=True, metavar="METRIC=VALUE",
              help="Pass threshold of a metric (default 0.5: score >= 0.5 passes).")
@click.option("--noise", type=click.Choice(["none", "blur", "jpeg", "shift", "tint", "all"]), default="none",
              show_default=True, help="Editor-like noise added to every output (within the scene tolerances).")
@click.option("--by", type=click.Choice(["task_type", "case", "turn", "subset"]), default="task_type",
              show_default=True, help="Break the table down by task type, case (probe / error kind), turn or subset.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
def judge_check(judge_name, judge_pairs, judge_config, suite_name, suite_pairs, map_pairs, thr_pairs, noise,
                by, batch_size, out):
    """Score probe editors and deliberately wrong edits with JUDGE; print agreement per metric and task type."""
    from tqdm import tqdm

    from micebench.options import OptionsError, parse_pairs, read_yaml_mapping
    from micebench.synth import judgecheck

    if suite_name != "synth":
        raise click.UsageError(f"--suite {suite_name}: judge-check needs exact ground truth; only 'synth' has it")
    try:
        jopts = read_yaml_mapping(judge_config) if judge_config else {}
        named = jopts.pop("judge", None)  # judge profiles may say which judge they configure
        if named is not None and named != judge_name:
            raise click.UsageError(f"--judge-config {judge_config} configures judge {named!r}, not {judge_name!r}")
        jopts.update(parse_pairs(judge_pairs, "-J"))
        sopts = parse_pairs(suite_pairs, "-S")
        mapping = {k.lower(): str(v) for k, v in parse_pairs(map_pairs, "--map").items()}
        thresholds = {k: float(v) for k, v in parse_pairs(thr_pairs, "--threshold").items()}
    except (OptionsError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    bad = [k for k in mapping if k not in ("if", "cc", "ga")]
    if bad:
        raise click.UsageError(f"--map: keys must be if, cc or ga, got {', '.join(bad)}")
    bar = tqdm(desc=f"judge-check {judge_name}", unit="case")
    try:
        table = judgecheck.judge_check(judge_name, jopts, sopts, mapping or None, thresholds, batch_size,
                                       progress=bar.update, noise=noise, by=by)
    except (OptionsError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        bar.close()
    with __import__("pandas").option_context("display.width", 200, "display.max_rows", 500):
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out:
        from micebench import csvsafe

        csvsafe.frame(table).to_csv(out, index=False)
        click.echo(f"wrote {out}")
