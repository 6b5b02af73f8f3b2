"""Time the results path on a MICE-sized run: open_run, the post-run console screen, summary across runs,
compare. Builds its own run directories (manifest + turns.parquet) with random scores; no runner.

    python bench/results_summary.py [--sessions 720] [--turns 5] [--metrics 11] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_run(root: Path, name: str, sessions: int, turns: int, metrics: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    names = ["if", "cc", "ga"] + [f"m{i}" for i in range(metrics - 3)]
    rows = []
    for s in range(sessions):
        for t in range(1, turns + 1):
            row = {"suite": "mice", "suite_version": "1", "subset": "cm" if s % 2 else "cu", "session_id": f"s{s:04d}",
                   "turn": t, "task_type": "color_alter", "instruction": "x", "status": "ok", "error": "",
                   "input_hash": "", "output_hash": ""}
            for m in names:
                ok = rng.random() > 0.05
                row[f"j_{m}"] = float(rng.random()) if ok else np.nan
                row[f"j_{m}_status"] = "ok" if ok else "unscored"
                row[f"j_{m}_reason"] = "" if ok else "judge timeout"
            rows.append(row)
    run = root / name
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(run / "turns.parquet", index=False)
    specs = [{"name": m, "role": m if m in ("if", "cc", "ga") else "other"} for m in names]
    manifest = {"run_id": name, "suite": {"name": "mice", "version": "1"}, "editor": {"name": name},
                "judges": [{"name": "j", "key": "j-1", "metrics": names, "metric_specs": specs}], "finished": "now"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def timed(label: str, fn) -> None:
    t0 = time.perf_counter()
    fn()
    print(f"{label:<48} {time.perf_counter() - t0:7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=720)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--metrics", type=int, default=11)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from micebench.api import compare, summary
    from micebench.results.quicklook import turn_summary
    from micebench.results.run import open_run

    with tempfile.TemporaryDirectory() as tmp:
        dirs = [make_run(Path(tmp), f"ed{i}", a.sessions, a.turns, a.metrics, i) for i in range(a.runs)]
        print(f"{a.runs} runs x {a.sessions} sessions x {a.turns} turns x {a.metrics} metrics")
        timed("open_run + turns() (one run)", lambda: open_run(dirs[0]).turns())
        timed("console screen after a run (200 boot)", lambda: turn_summary(dirs[0]))
        timed(f"summary of {a.runs} runs, IF/CC/GA, markdown (1000 boot)", lambda: summary(dirs, fmt="markdown"))
        timed(f"summary of {a.runs} runs, all metrics (1000 boot)", lambda: summary(dirs, roles=None))
        timed("compare two runs, per turn (2000 boot)", lambda: compare(dirs[0], dirs[1]))


if __name__ == "__main__":
    main()
