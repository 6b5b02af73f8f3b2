"""Edit-R2 reference editor: the one prepared GPU check (run on demand, not a test).

    python bench/edit_r2_gpu.py                   # on a CUDA machine: everything below (~8 min on an H200)
    python bench/edit_r2_gpu.py --dry-run         # CPU: the same code with the tiny architecture (seconds)
    python bench/edit_r2_gpu.py --cpu-only        # CPU: the tiny-checkpoint part only

Part 1, ``tiny``: the tests' tiny random checkpoint, one 2-turn 64x64 session at 2 steps on the CPU (fp32,
twice: reproducible?) and, with a GPU, on the GPU in fp32 and bf16 (max/mean absolute pixel difference
against the CPU), plus packed vs unpacked on the GPU in bf16.

Part 2, ``full``: the full BAGEL-7B-MoT architecture (28-layer MoT LLM at 3584 wide with both experts,
26-layer SigLIP, FLUX VAE) with RANDOM weights built directly on the GPU in bf16 (no checkpoint: time
and memory do not need real weights; the images are meaningless). Rows: ``unpacked`` (``packed=false``,
today's path: one session after another, three forwards per step) and ``packed`` (the default) at batch
1, 4 and 8. Each row edits B two-turn 512x512 sessions at 50 steps through the editor, the way the runner
batches them (turn 1 of all B sessions in one ``edit()`` call, then turn 2, which adds IC-CoT decoding;
random weights never emit <|im_end|>, so it decodes the whole 300-token budget, an upper bound).
Reported per row: seconds per turn (turn 1, turn 2, both), turns per hour, peak GPU memory; then the
packed/unpacked ratios and the issue's targets (<= 8 s per turn at batch 1; >= 2x turns/hour at batch 8).

Rows run most informative first and stop starting new ones past ``--budget-s`` (the rest are recorded as
skipped). Results go to stdout as JSON and to ``$OUT/edit_r2_gpu.json`` (rewritten after every row, so a
run cut short still leaves what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-checkpoint helper lives beside the tests

TEXTS = ("add a red hat to the cat", "make it blue")
ROW_ORDER = (("packed", 1), ("unpacked", 1), ("packed", 8), ("unpacked", 8), ("packed", 4), ("unpacked", 4))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def write(report: dict) -> None:
    text = json.dumps(report, indent=2)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "edit_r2_gpu.json").write_text(text)


# -- the editor driven like the runner ------------------------------------------------------------------
def sessions(batch: int, tag: str, size: int):
    import numpy as np
    from PIL import Image

    from micebench.spec import Session, Turn

    turns = tuple(Turn(instruction=t, task_type="subject_add") for t in TEXTS)
    out = []
    for b in range(batch):
        src = Image.fromarray((np.random.RandomState(b).rand(size, size, 3) * 255).astype(np.uint8))
        out.append((Session(id=f"{tag}-{b}", suite="bench", subset="cu", source_image="/x.png", turns=turns), src))
    return out


def run_turns(editor, batch: int, tag: str, size: int) -> tuple[list[float], list]:
    """Two turns of ``batch`` sessions, one ``edit()`` call per turn; seconds per call and the results."""
    from micebench.spec import EditRequest

    sess = sessions(batch, tag, size)
    outs: dict[str, list] = {s.id: [] for s, _ in sess}
    eff: dict[str, list] = {s.id: [] for s, _ in sess}
    seconds, results = [], []
    for k in range(2):
        reqs = [EditRequest(session=s, turn_index=k, source_image=src, instruction=TEXTS[k],
                            history_instructions=TEXTS[:k], history_effective=tuple(eff[s.id]),
                            history_images=tuple(outs[s.id])) for s, src in sess]  # fmt: skip
        _sync()
        t = time.perf_counter()
        res = editor.edit(reqs)
        _sync()
        seconds.append(time.perf_counter() - t)
        for (s, _), r in zip(sess, res, strict=True):
            if r.error:
                raise RuntimeError(f"{s.id} turn {k + 1}: {r.error}")
            outs[s.id].append(r.image)
            eff[s.id].append(r.effective_instruction)
        results.append(res)
    return seconds, results


# -- part 1: tiny checkpoint ------------------------------------------------------------------------------
def tiny_run(ckpt: Path, device: str, dtype: str, packed: bool = True) -> list:
    import numpy as np

    from micebench.editors import create_editor

    ed = create_editor("edit-r2", {"weights": str(ckpt), "resolution": 64, "steps": 2, "max_think_tokens": 12,
                                   "device": device, "dtype": dtype, "packed": packed})  # fmt: skip
    _, results = run_turns(ed, 1, "tiny", 64)
    ed.close()
    return [np.asarray(r[0].image, dtype=np.float64) / 255.0 for r in results]


def _diffs(a: list, b: list) -> list:
    return [
        {"turn": k + 1, "max_abs": round(float(abs(x - y).max()), 4), "mean_abs": round(float(abs(x - y).mean()), 5)}
        for k, (x, y) in enumerate(zip(a, b, strict=True))
    ]


def tiny_compare(with_gpu: bool) -> dict:
    from edit_r2_tiny import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="edit_r2_tiny_")))
    t = time.perf_counter()
    cpu = tiny_run(ckpt, "cpu", "float32")
    res: dict = {"cpu_seconds": round(time.perf_counter() - t, 2)}
    res["cpu_rerun_identical"] = all((a == b).all() for a, b in zip(cpu, tiny_run(ckpt, "cpu", "float32"), strict=True))
    res["cpu_packed_vs_unpacked_fp32"] = _diffs(cpu, tiny_run(ckpt, "cpu", "float32", packed=False))
    if with_gpu:
        for dtype in ("float32", "bfloat16"):
            res[f"gpu_{dtype}_vs_cpu"] = _diffs(tiny_run(ckpt, "cuda", dtype), cpu)
        res["gpu_bf16_packed_vs_unpacked"] = _diffs(
            tiny_run(ckpt, "cuda", "bfloat16"), tiny_run(ckpt, "cuda", "bfloat16", packed=False)
        )
    return res


# -- part 2: the full-size architecture, random weights -----------------------------------------------------
def build_random_engine(dry_run: bool):
    """The full BAGEL architecture in bf16 on the GPU with random weights (``dry_run``: the tiny one on CPU)."""
    import torch
    from edit_r2_tiny import TINY, build_tokenizer

    from micebench.editors.edit_r2.config import BagelConfig
    from micebench.editors.edit_r2.context import Engine
    from micebench.editors.edit_r2.model import BagelModel
    from micebench.editors.edit_r2.tokenizer import BagelTokenizer
    from micebench.editors.edit_r2.vae import AutoEncoder

    device = torch.device("cpu" if dry_run else "cuda")
    cfg = TINY if dry_run else BagelConfig()
    dtype = torch.float32 if dry_run else torch.bfloat16
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = BagelModel(cfg)
    finally:
        torch.set_default_dtype(default)
    model = model.to(device, dtype).eval().requires_grad_(False)
    with torch.no_grad():  # keep random activations finite through 28 layers
        for name, p in model.named_parameters():
            if p.ndim == 2 and "pos_embed" not in name and "embedding.weight" not in name:
                p.normal_(0.0, 0.02)
    with device:
        vae = AutoEncoder(cfg.vae).eval().requires_grad_(False)  # fp32, as Edit-R2
    tok_dir = Path(tempfile.mkdtemp(prefix="edit_r2_tok_"))
    build_tokenizer(tok_dir)
    model.language_model.round_inv_freq_to_bf16 = True
    engine = Engine(model, vae, BagelTokenizer(tok_dir), device, dtype)
    return engine, sum(p.numel() for p in model.parameters())


def full_size_rows(args, report: dict, started: float) -> None:
    import torch

    from micebench.editors import create_editor

    t0 = time.perf_counter()
    engine, n_params = build_random_engine(args.dry_run)
    _sync()
    full: dict = {"model_params": n_params, "build_seconds": round(time.perf_counter() - t0, 1), "rows": []}
    report["full_size"] = full
    res, steps, think = args.resolution, args.steps, args.think_tokens
    if args.dry_run:  # the tiny architecture: small everything, the same code
        res, steps, think = 64, min(steps, 3), min(think, 8)
    full["settings"] = {"resolution": res, "steps": steps, "think_tokens": think, "turns_per_session": 2,
                        "attn_impl": args.attn_impl, "compile": args.compile}  # fmt: skip
    options = {"resolution": res, "steps": steps, "max_think_tokens": think, "context_min_side": res,
               "attn_impl": args.attn_impl, "device": str(engine.device)}  # fmt: skip
    from micebench.editors.edit_r2.attention import resolve_impl

    full["attention_kernel"] = resolve_impl(args.attn_impl, engine.device, engine.dtype)
    batches = [int(b) for b in args.batches.split(",")]
    for mode, batch in [r for r in ROW_ORDER if r[1] in batches]:
        row: dict = {"mode": mode, "batch": batch}
        full["rows"].append(row)
        if time.perf_counter() - started > args.budget_s:
            row["skipped"] = f"time budget of {args.budget_s} s spent"
            write(report)
            continue
        ed = create_editor(
            "edit-r2", {**options, "packed": mode == "packed", "compile": args.compile and mode == "packed"}
        )
        ed.use_engine(engine)
        if engine.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            secs, results = run_turns(ed, batch, f"{mode}{batch}", res)
        except RuntimeError as e:  # e.g. out of memory at batch 8: recorded, the other rows still run
            row["error"] = str(e)[:300]
            ed._sessions.clear()
            write(report)
            continue
        total = sum(secs)
        row.update(
            seconds_per_turn=round(total / (2 * batch), 3),
            turn1_seconds_per_turn=round(secs[0] / batch, 3),
            turn2_seconds_per_turn=round(secs[1] / batch, 3),
            turns_per_hour=round(3600 * 2 * batch / total, 1),
            ic_cot_tokens=results[1][0].extra.get("ic_cot_tokens"),
        )
        if engine.device.type == "cuda":
            row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(json.dumps(row), flush=True)
        write(report)
    rate = {(r["mode"], r["batch"]): r["turns_per_hour"] for r in full["rows"] if "turns_per_hour" in r}
    full["packed_over_unpacked"] = {
        str(b): round(rate["packed", b] / rate["unpacked", b], 2)
        for b in batches
        if ("packed", b) in rate and ("unpacked", b) in rate
    }
    if ("packed", 8) in rate and ("unpacked", 1) in rate:
        full["packed_b8_over_unpacked_b1_turns_per_hour"] = round(rate["packed", 8] / rate["unpacked", 1], 2)
    per_turn = {(r["mode"], r["batch"]): r["seconds_per_turn"] for r in full["rows"] if "seconds_per_turn" in r}
    full["targets"] = {
        "packed_seconds_per_turn_at_batch_1 (<= 8)": per_turn.get(("packed", 1)),
        "turns_per_hour_ratio_at_batch_8 (>= 2)": full["packed_over_unpacked"].get("8"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-only", action="store_true", help="only the tiny CPU part")
    ap.add_argument("--dry-run", action="store_true", help="part 2's code with the tiny architecture on the CPU")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--think-tokens", type=int, default=300)
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--attn-impl", default="auto", choices=["auto", "sdpa", "flash"])
    ap.add_argument("--compile", action="store_true", help="packed rows with compile=true (slow first call)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no new row after this many seconds")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    import torch

    gpu = torch.cuda.is_available() and not args.cpu_only and not args.dry_run
    if not gpu:  # tiny CPU models: one thread is faster than two competing ones on a small shared machine
        torch.set_num_threads(1)
    report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if gpu else None}
    if gpu:
        from micebench.editors.edit_r2.attention import flash_available

        report["flash_attn"] = flash_available()
    report["tiny"] = tiny_compare(gpu)
    write(report)
    if gpu or args.dry_run:
        full_size_rows(args, report, started)
    else:
        report["full_size"] = "not run: no GPU (use a CUDA machine, or --dry-run to exercise the code on CPU)"
    report["seconds"] = round(time.perf_counter() - started, 1)
    write(report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
