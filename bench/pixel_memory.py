"""Peak memory and time of the pixel judge on one large output (issue 10: 8000x8000 took 9.3 GiB, 87 s).

    python bench/pixel_memory.py 8000            # this checkout's judge
    python bench/pixel_memory.py 2000 --module path/to/old_pixel.py   # another version, for comparison

Each size runs in a fresh subprocess; peak is the process's maximum resident set size minus what it
held before scoring (images included), so it is what scoring one turn costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import importlib.util, json, resource, sys, time
import numpy as np
from PIL import Image
from micebench.spec import JudgeRequest, Session, Turn
size, module = int(sys.argv[1]), sys.argv[2]
if module:
    spec = importlib.util.spec_from_file_location("pixel_under_test", module)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    judge = mod.PixelJudge()
else:
    from micebench.judges.pixel import PixelJudge
    judge = PixelJudge()
rng = np.random.default_rng(0)
a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
b = a.copy(); b[::7] = 255 - b[::7]
turn = Turn(instruction="x", task_type="color_alter")
s = Session(id="s", suite="t", source_image="/nonexistent.png", turns=(turn,))
req = JudgeRequest(session=s, turn_index=0, source_image=Image.fromarray(a), outputs=(Image.fromarray(b),))
del a, b
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
[res] = judge.score([req])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "seconds": round(dt, 2), "peak_extra_mib": round((peak - before) / 1024, 1),
                  "ssim_src": next(j.score for j in res if j.metric == "ssim_src")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="+", type=int)
    ap.add_argument("--module", default="", help="a pixel.py to measure instead of the installed one")
    args = ap.parse_args()
    for size in args.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(size), args.module], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            sys.exit(out.returncode)
        print(json.dumps({**json.loads(out.stdout), "module": args.module or "micebench.judges.pixel"}))


if __name__ == "__main__":
    main()
