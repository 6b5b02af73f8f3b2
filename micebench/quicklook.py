"""The short summary printed after a run: IF / CC / GA (or every metric) per turn index."""

from __future__ import annotations

from pathlib import Path


def turn_summary(run_dir: str | Path) -> str:
    import json

    import pandas as pd

    from micebench.store import read_turn_table

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    df = read_turn_table(run_dir)
    status = df["status"].value_counts().to_dict()
    suite = manifest["suite"]
    head = (f"{manifest['editor']['name']} on {suite['name']} ({suite['n_sessions']} sessions): "
            + ", ".join(f"{k} {v}" for k, v in sorted(status.items())) + f"  -> {run_dir}")
    metrics = [c[: -len("_status")] for c in df.columns if c.endswith("_status") and c != "status"]
    main_metrics = [m for m in metrics if m.rsplit("_", 1)[-1] in ("if", "cc", "ga")] or metrics[:6]
    if not main_metrics:
        return head + "\n(no judge scores)"
    rows = {}
    for m in main_metrics:
        ok = df[df[f"{m}_status"] == "ok"]
        per_turn = ok.groupby("turn")[m].mean()
        cov = df[df["status"] == "ok"].groupby("turn")[f"{m}_status"].apply(lambda s: (s == "ok").mean())
        row = {f"turn {t}": per_turn.get(t) for t in sorted(df["turn"].unique())}
        row["all"] = ok[m].mean() if len(ok) else float("nan")
        row["coverage"] = cov.mean() if len(cov) else float("nan")
        rows[m] = row
    table = pd.DataFrame(rows).T
    return head + "\n" + table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")


def editors_table(run_dirs: list[str | Path]) -> str:
    """One line per run: the mean of each IF / CC / GA metric over all scored turns."""
    import json

    import pandas as pd

    from micebench.store import read_turn_table

    rows = {}
    for d in run_dirs:
        d = Path(d)
        name = json.loads((d / "manifest.json").read_text())["editor"]["name"]
        df = read_turn_table(d)
        metrics = [c[: -len("_status")] for c in df.columns if c.endswith("_status") and c != "status"]
        rows[name] = {m: df.loc[df[f"{m}_status"] == "ok", m].mean()
                      for m in metrics if m.rsplit("_", 1)[-1] in ("if", "cc", "ga")}
        rows[name]["failed turns"] = int((df["status"] != "ok").sum())
    table = pd.DataFrame(rows).T
    table["failed turns"] = table["failed turns"].astype(int)
    return table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")
