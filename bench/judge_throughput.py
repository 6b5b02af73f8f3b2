"""Throughput of the clip judge vs a bare open_clip forward pass of the same model (on demand).

    .venv/bin/python bench/judge_throughput.py [--model ViT-B-32] [--requests 32] [--repeats 3]

Random weights (no download). Both sides do the same work: every request is a turn-1 edit with a
distinct source and output image (2 images) and a distinct source and target text (2 texts); the
bare side preprocesses the same PIL images with the same transform and runs ``encode_image`` /
``encode_text`` in chunks of the same batch size. Throughput is images per second (texts ride
along on both sides). Goal: the judge reaches at least 90% of the bare throughput.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
from PIL import Image


def make_requests(n: int):
    from micebench.spec import JudgeRequest, Session, Turn

    rng = np.random.default_rng(0)
    colors = ["red", "green", "blue", "black", "white", "pink", "gray", "brown"]
    reqs = []
    for i in range(n):
        t = Turn(instruction="x", task_type="color_alter",
                 formatted_instruction=f"Change the color of [object {i}] to [{colors[i % len(colors)]}]")  # fmt: skip
        s = Session(id=f"s{i}", suite="bench", source_image="/dev/null", turns=(t,))
        src, out = (Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(2))
        reqs.append(JudgeRequest(session=s, turn_index=0, source_image=src, outputs=(out,)))
    return reqs


def bare(judge, reqs, batch: int) -> None:
    import torch
    import torch.nn.functional as F

    from micebench.judges.clip import edit_texts

    model, pre, tok = judge._model, judge._preprocess, judge._tokenizer
    images = [im for r in reqs for im in (r.source_image, r.output)]
    texts = [t for r in reqs for t in edit_texts(r.turn)[:2]]
    with torch.no_grad():
        for k in range(0, len(images), batch):
            F.normalize(model.encode_image(torch.stack([pre(im) for im in images[k : k + batch]])), dim=-1)
        for k in range(0, len(texts), batch):
            F.normalize(model.encode_text(tok(texts[k : k + batch])), dim=-1)


def judged(judge, reqs, batch: int) -> None:
    per_call = max(1, batch // 2)  # 2 images per request
    for k in range(0, len(reqs), per_call):
        judge.score(reqs[k : k + per_call])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()

    import torch

    from micebench.judges.base import create_judge

    torch.manual_seed(0)
    reqs = make_requests(args.requests)
    n_images = 2 * len(reqs)
    results = []
    judge = None
    for batch in (int(b) for b in args.batches.split(",")):
        j = create_judge("clip", {"model_name": args.model, "device": "cpu", "batch_size": batch,
                                  "allow_random_weights": True})  # a throughput check: weights do not matter
        if judge is not None:  # share one model (same weights) across batch sizes
            j._model, j._preprocess, j._tokenizer, j.device = judge._model, judge._preprocess, judge._tokenizer, "cpu"
        j._load()
        judge = judge or j
        judged(j, reqs[:2], batch)  # warm-up
        bare(j, reqs[:2], batch)
        times = {"bare": [], "judge": []}
        for _ in range(args.repeats):  # interleaved, so both sides see the same machine load
            t0 = time.perf_counter()
            bare(j, reqs, batch)
            times["bare"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            judged(j, reqs, batch)
            times["judge"].append(time.perf_counter() - t0)
        row = {"batch": batch, "images": n_images}
        for side in ("bare", "judge"):
            row[f"{side}_images_per_s"] = n_images / statistics.median(times[side])
        row["ratio"] = row["judge_images_per_s"] / row["bare_images_per_s"]
        results.append(row)
    print(f"model {args.model} (random weights), {n_images} images + {n_images} texts per pass, "
          f"median of {args.repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print(f"{'batch':>5} {'bare img/s':>11} {'judge img/s':>12} {'judge/bare':>10}")
    for r in results:
        print(f"{r['batch']:>5} {r['bare_images_per_s']:>11.2f} {r['judge_images_per_s']:>12.2f} {r['ratio']:>10.1%}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
