"""Throughput of the diffusers editor vs calling the same pipeline directly (on demand).

    .venv/bin/python bench/diffusers_overhead.py [--family instruct-pix2pix] [--batches 1 4] [--repeats 7]

Builds a tiny random pipeline (tests/diffusers_tiny.py, nothing downloaded), loads it once through
the adapter, and times, in the same process and alternating, (a) ``editor.edit(requests)`` and (b)
``pipe(prompt=..., image=..., generator=..., **the same call arguments)`` on the same images with
the same per-turn seeds. Requests are built before timing (that is the runner's work, not the
adapter's). Throughput is turns per second, median over repeats; the goal is adapter >= 0.95x
direct at batch 1 and 4. A tiny pipeline makes this a strict test: the smaller the model's work,
the larger the adapter's share.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def requests(n: int, size: int):
    from editor_fixtures import picture

    from micebench.spec import EditRequest, Session, Turn

    out = []
    for i in range(n):
        s = Session(id=f"s{i}", suite="bench", source_image="/dev/null",
                    turns=(Turn(instruction=f"make the sky red {i}", task_type="color_alter"),))  # fmt: skip
        out.append(EditRequest(session=s, turn_index=0, source_image=picture(i, (size, size)),
                               instruction=s.turns[0].instruction))  # fmt: skip
    return out


def direct(pipe, reqs, call_args: dict, seed: int) -> list:
    import torch

    from micebench.editors.context import turn_seed

    n = len(reqs)
    gens = [torch.Generator(device="cpu").manual_seed(turn_seed(seed, r.session.id, r.turn_index)) for r in reqs]
    out = pipe(prompt=[r.instruction for r in reqs] if n > 1 else reqs[0].instruction,
               image=[r.source_image for r in reqs] if n > 1 else reqs[0].source_image,
               generator=gens if n > 1 else gens[0], num_images_per_prompt=1, output_type="pil", **call_args)
    return out.images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="instruct-pix2pix", choices=["instruct-pix2pix", "flux-kontext"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = ap.parse_args()

    import torch
    from diffusers_tiny import BUILDERS, FAST_OPTIONS

    from micebench.editors.base import create_editor

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-diffusers-")) / args.family
    BUILDERS[args.family](folder)
    opts = {**FAST_OPTIONS[args.family], "model": str(folder), "steps": args.steps, "seed": 0}
    editor = create_editor("diffusers", opts)
    pipe = editor.load()
    call_args = editor.describe()["call_args"]
    if args.family == "flux-kontext":
        call_args = {**call_args, "width": args.size, "height": args.size}  # what the adapter adds per call

    results = []
    for batch in args.batches:
        reqs = requests(batch, args.size)
        # warm-up, and a check that both sides compute the same thing
        a = [r.image for r in editor.edit(reqs)]
        b = direct(pipe, reqs, call_args, 0)
        same = all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
        t_adapter, t_direct = [], []
        for k in range(args.repeats):
            # alternate which side goes first, so neither always runs on a warmer cache
            for side in (("direct", "adapter") if k % 2 == 0 else ("adapter", "direct")):
                t0 = time.perf_counter()
                if side == "direct":
                    direct(pipe, reqs, call_args, 0)
                    t_direct.append(time.perf_counter() - t0)
                else:
                    editor.edit(reqs)
                    t_adapter.append(time.perf_counter() - t0)
        md, ma = statistics.median(t_direct), statistics.median(t_adapter)
        results.append({"batch": batch, "direct_turns_per_s": round(batch / md, 2),
                        "adapter_turns_per_s": round(batch / ma, 2), "ratio": round(md / ma, 3),
                        "identical_pixels": same, "direct_s": [round(x, 4) for x in t_direct],
                        "adapter_s": [round(x, 4) for x in t_adapter]})  # fmt: skip
    # The adapter's own cost, free of the machine's load on the model: the same edit() with a pipeline
    # that returns at once.
    class Instant:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def __call__(self, **kw):
            n = len(kw["prompt"]) if isinstance(kw["prompt"], list) else 1
            return type("Out", (), {"images": [r.source_image for r in reqs[:n]]})()

    editor._pipe = Instant(pipe)
    for r in results:
        reqs = requests(r["batch"], args.size)
        t0 = time.perf_counter()
        for _ in range(50):
            editor.edit(reqs)
        r["adapter_own_ms_per_call"] = round((time.perf_counter() - t0) / 50 * 1000, 3)
    report = {"family": args.family, "steps": args.steps, "size": args.size, "threads": args.threads,
              "repeats": args.repeats, "torch": torch.__version__, "machine": platform.platform(),
              "results": results}  # fmt: skip
    print(json.dumps(report, indent=1))
    for r in results:
        print(f"batch {r['batch']}: direct {r['direct_turns_per_s']} turns/s, adapter {r['adapter_turns_per_s']} "
              f"turns/s, ratio {r['ratio']} ({'same pixels' if r['identical_pixels'] else 'PIXELS DIFFER'}); "
              f"the adapter's own work {r['adapter_own_ms_per_call']} ms per call")


if __name__ == "__main__":
    main()
