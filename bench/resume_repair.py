"""What `micebench run --resume` pays to verify stored images (on demand, not part of the tests).

repair() decodes and re-hashes every stored image so a truncated or altered file is redone. This
builds a run record with N sessions x T turns of SIZE x SIZE noise images (noise: the worst case for
PNG) and times repair() on it.

    python bench/resume_repair.py --sessions 100 --turns 5 --size 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from micebench.spec import Session, Turn
from micebench.store import RunStore, TurnRecord


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    turn = Turn(instruction="Remove the cup", task_type="subject_remove")
    sessions = [Session(id=f"s{i}", suite="bench", source_image="/dev/null", turns=(turn,) * args.turns)
                for i in range(args.sessions)]
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(Path(tmp) / "run", {"run_id": "bench", "finished": None}, sessions)
        records = []
        for s in sessions:
            prev = store.put_image(Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)))
            for t in range(args.turns):
                out = store.put_image(Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3),
                                                                   dtype=np.uint8)))
                records.append(TurnRecord(s.id, t, "ok", input_hash=prev, output_hash=out))
                prev = out
        store.write_turns(records)
        n_images = len(list(store.images_dir.iterdir()))
        started = time.perf_counter()
        dropped = store.repair()
        took = time.perf_counter() - started
        store.close()
    assert not dropped
    print(f"{n_images} images of {args.size}x{args.size}: repair() {took:.2f} s, "
          f"{1000 * took / n_images:.2f} ms per image")


if __name__ == "__main__":
    main()
