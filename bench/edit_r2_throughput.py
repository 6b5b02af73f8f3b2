"""Edit-R2 editor throughput on the CPU: packed vs unpacked, turns per second at batch 1, 4 and 8.

    python bench/edit_r2_throughput.py                  # defaults below; about a minute on one core
    python bench/edit_r2_throughput.py --runs 7 --threads 2

A CPU-sized random BAGEL (the real architecture: MoT LLM with both experts, SigLIP, FLUX VAE; 4 LLM
layers at width 128) is written to a temporary folder in the official file layout and loaded through
``create_editor("edit-r2", ...)``. Each run edits B two-turn sessions the way the runner does
(turn 1 of all B sessions as one ``edit()`` call, then turn 2 with IC-CoT), at 64x64 px, 10 steps,
16 IC-CoT tokens. ``unpacked`` is ``packed=false`` (today's reference path: one session after another,
three forwards per sampling step); ``packed`` is the default path. Turns per second = 2B / wall time,
median of ``--runs`` runs after one warm-up run. Random weights: only time is measured.

The last line reads ``packed/unpacked throughput ratio at batch 8: X.XX``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-checkpoint helper lives beside the tests

INSTRUCTIONS = [
    ("add a red hat to the cat", "make it blue"),
    ("remove the dog from the picture", "replace them with apples"),
    ("change the sky", "make the car green and the hat red"),
    ("add a dog", "make it smaller"),
]


def cpu_sized_config():
    from micebench.editors.edit_r2.config import BagelConfig, LLMConfig, VAEConfig, ViTConfig

    return BagelConfig(
        llm=LLMConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=512,
        ),
        vit=ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vae=VAEConfig(ch=8, ch_mult=(1, 2, 4, 4), num_res_blocks=1),
    )


def sessions(batch: int, tag: str):
    import numpy as np
    from PIL import Image

    from micebench.spec import Session, Turn

    out = []
    for b in range(batch):
        texts = INSTRUCTIONS[b % len(INSTRUCTIONS)]
        turns = tuple(Turn(instruction=t, task_type="subject_add") for t in texts)
        src = Image.fromarray((np.random.RandomState(b).rand(64, 64, 3) * 255).astype(np.uint8))
        out.append((Session(id=f"{tag}-{b}", suite="bench", subset="cu", source_image="/x.png", turns=turns), src))
    return out


def run_sessions(editor, batch: int, tag: str) -> tuple[float, float]:
    """Edit ``batch`` two-turn sessions turn-synchronously; returns (wall seconds, process CPU seconds)."""
    from micebench.spec import EditRequest

    sess = sessions(batch, tag)
    history: dict[str, tuple[list, list]] = {s.id: ([], []) for s, _ in sess}
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(2):
        reqs = []
        for s, src in sess:
            outs, eff = history[s.id]
            reqs.append(
                EditRequest(
                    session=s,
                    turn_index=k,
                    source_image=src,
                    history_instructions=tuple(t.instruction for t in s.turns[:k]),
                    history_effective=tuple(eff),
                    history_images=tuple(outs),
                    instruction=s.turns[k].instruction,
                )
            )
        for (s, _), res in zip(sess, editor.edit(reqs), strict=True):
            if res.error:
                raise RuntimeError(f"{s.id} turn {k + 1}: {res.error}")
            history[s.id][0].append(res.image)
            history[s.id][1].append(res.effective_instruction)
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per row (median reported)")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--think-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    import torch
    from edit_r2_tiny import build_tiny_checkpoint

    from micebench.editors import create_editor

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    ckpt = build_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="edit_r2_bench_")), cfg=cpu_sized_config())
    base = {
        "weights": str(ckpt), "device": "cpu", "resolution": 64, "context_min_side": 64, "steps": args.steps,
        "max_think_tokens": args.think_tokens,
    }  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.runs} runs per row; CPU-sized random model, "
          f"64x64 px, {args.steps} steps, {args.think_tokens} IC-CoT tokens, 2-turn sessions")  # fmt: skip
    rates: dict[tuple[str, int], float] = {}
    cpu_rates: dict[tuple[str, int], float] = {}
    # turns per CPU-second: on a shared machine the process's own CPU time is far steadier than wall time
    print(f"{'mode':<9} {'batch':>5} {'turns/s':>8} {'turns/cpu-s':>11}  wall seconds per run")
    for mode in ("unpacked", "packed"):
        editor = create_editor("edit-r2", {**base, "packed": mode == "packed"})
        run_sessions(editor, 1, "warmup")  # loads the model; first calls pay one-time costs
        for batch in batches:
            runs = [run_sessions(editor, batch, f"{mode}-{batch}-{r}") for r in range(args.runs)]
            rates[mode, batch] = 2 * batch / statistics.median(w for w, _ in runs)
            cpu_rates[mode, batch] = 2 * batch / statistics.median(c for _, c in runs)
            walls = " ".join(f"{w:.2f}" for w, _ in runs)
            print(f"{mode:<9} {batch:>5} {rates[mode, batch]:>8.2f} {cpu_rates[mode, batch]:>11.2f}  {walls}")
        editor.close()
    for batch in batches:
        ratio = cpu_rates["packed", batch] / cpu_rates["unpacked", batch]
        print(f"packed/unpacked ratio of turns per CPU-second at batch {batch}: {ratio:.2f}")
    for batch in batches:  # the requested batch size last: its line ends the output
        ratio = rates["packed", batch] / rates["unpacked", batch]
        print(f"packed/unpacked throughput ratio at batch {batch}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
