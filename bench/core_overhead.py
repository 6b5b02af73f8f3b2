"""Harness overhead: identity editor + pixel judge on N sessions x 3 turns at 256x256.

Run on demand (not a test):

    python bench/core_overhead.py --sessions 100 1000

For each N it runs a fresh process (so peak memory is that run's alone) that builds a JSONL suite
of N sessions with distinct random 256x256 source images, then runs ``micebench run`` in-process
with the identity editor and the pixel judge, and prints seconds per turn for the edit phase
(pure harness overhead: the identity editor does no work) and the judge phase, and the peak
resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_suite(folder: Path, n: int, size: int = 256) -> Path:
    import numpy as np
    from PIL import Image

    (folder / "source_image").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        name = f"source_image/{i:06d}.png"
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(folder / name)
        lines.append(json.dumps({
            "image": name, "instruction": ["Remove the cup", "Make it red", "Add a dog"],
            "task_type": ["subject_remove", "color_alter", "subject_add"],
            "formatted_instruction": ["Remove [cup]", "Change the color of [plate] to [red]", "Add [dog]"],
            "bg_consistency": [True] * 3, "unchanged_objects": [["plate"]] * 3, "all_objects": [["cup", "plate"]] * 3,
        }))
    (folder / "test_metadata.jsonl").write_text("\n".join(lines))
    return folder


def one(n: int) -> dict:
    from micebench.evaluate import build_judges, start_run  # noqa: F401  (imported before timing)
    from micebench.runner import Runner, RunSettings
    from micebench.store import RunStore
    from micebench.suites.resolve import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = load_suite(str(make_suite(tmp / "suite" / "bench", n)))
        settings = RunSettings(batch_size=16, progress=False)
        t0 = time.perf_counter()
        res = start_run(suite, "identity", {}, [], out=tmp / "runs", run_name="r", settings=settings)
        edit_s = time.perf_counter() - t0
        store = RunStore.open(res.run_dir)
        t1 = time.perf_counter()
        Runner(store, settings).judge(build_judges([("pixel", {})]))
        judge_s = time.perf_counter() - t1
    turns = 3 * n
    return {"sessions": n, "turns": turns, "edit_ms_per_turn": 1000 * edit_s / turns,
            "judge_ms_per_turn": 1000 * judge_s / turns,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child)))
        return
    print(f"{'sessions':>8} {'turns':>6} {'edit ms/turn':>13} {'judge ms/turn':>14} {'peak RSS MB':>12}")
    for n in args.sessions:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['sessions']:>8} {r['turns']:>6} {r['edit_ms_per_turn']:>13.2f} {r['judge_ms_per_turn']:>14.2f} "
              f"{r['peak_rss_mb']:>12.1f}")


if __name__ == "__main__":
    main()
