"""Edit-R2 reference editor: the one prepared GPU check (run on demand, not a test).

    python bench/edit_r2_gpu.py                 # on a CUDA machine: full-size timing + tiny GPU-vs-CPU
    python bench/edit_r2_gpu.py --cpu-only      # the tiny parts only (what runs on a CPU box)

Part 1 (GPU): the full BAGEL-7B-MoT architecture (28-layer MoT LLM at 3584 wide with both experts,
26-layer SigLIP, FLUX VAE) with RANDOM weights built directly on the GPU in bf16 (no checkpoint:
timing does not need real weights). One session of two 512x512 turns at 50 steps: turn 1 (context
= source image), turn 2 (context = source + turn-1 text and output, plus IC-CoT decoding up to
``--think-tokens`` tokens on the understanding path). Reports seconds per turn (and its parts) and
peak GPU memory. Random weights produce meaningless images; only time and memory are measured.

Part 2: the tiny random checkpoint of the tests, one 2-turn 64x64 session at 2 steps, on CPU (fp32)
and, with a GPU, on GPU in fp32 and bf16: max/mean absolute pixel difference against the CPU run.

Results go to stdout as JSON and to ``$OUT/edit_r2_gpu.json`` when ``$OUT`` is set.
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


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def full_size_turns(steps: int, resolution: int, think_tokens: int, dry_run: bool = False) -> dict:
    """Random-weight full-size model on the GPU in bf16; times two turns of one session.

    ``dry_run`` runs the same code with the tiny test architecture on the CPU (checks the script only).
    """
    import numpy as np
    import torch
    from edit_r2_tiny import TINY, build_tokenizer
    from PIL import Image

    from micebench.editors.edit_r2.config import BagelConfig
    from micebench.editors.edit_r2.context import Context, Engine
    from micebench.editors.edit_r2.generation import ic_cot_rewrite
    from micebench.editors.edit_r2.model import BagelModel
    from micebench.editors.edit_r2.sampler import SamplerSettings, sample
    from micebench.editors.edit_r2.tokenizer import BagelTokenizer
    from micebench.editors.edit_r2.vae import AutoEncoder

    device = torch.device("cpu" if dry_run else "cuda")
    cfg = TINY if dry_run else BagelConfig()
    dtype = torch.float32 if dry_run else torch.bfloat16
    torch.manual_seed(0)
    t0 = time.perf_counter()
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
        vae = AutoEncoder(cfg.vae).eval().requires_grad_(False)
    _sync()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    tok_dir = Path(tempfile.mkdtemp(prefix="edit_r2_tok_"))
    build_tokenizer(tok_dir)
    engine = Engine(model, vae, BagelTokenizer(tok_dir), device, dtype)
    model.language_model.round_inv_freq_to_bf16 = True

    side = resolution // cfg.latent_downsample
    settings = SamplerSettings(steps=steps)
    rng = np.random.RandomState(0)
    source = Image.fromarray((rng.rand(resolution, resolution, 3) * 255).astype(np.uint8))
    if not dry_run:
        torch.cuda.reset_peak_memory_stats()
    out: dict = {"model_params": n_params, "build_seconds": round(build_s, 2)}

    def one_turn(gen: Context, cimg: Context, instruction: str, history: list[str]):
        timing: dict = {}
        _sync()
        t = time.perf_counter()
        if history:
            rw = ic_cot_rewrite(engine, gen, history, instruction, "cu", max_length=think_tokens)
            _sync()
            timing["ic_cot_seconds"] = round(time.perf_counter() - t, 3)
            timing["ic_cot_tokens"] = rw.num_tokens
            t2 = time.perf_counter()
        else:
            t2 = t
        text_uncond = gen
        gen2, cimg2 = engine.add_text(gen, instruction), engine.add_text(cimg, instruction)
        noise = torch.randn(side * side, cfg.patch_latent_dim, generator=torch.Generator().manual_seed(1))
        x = sample(
            noise.to(device),
            settings,
            lambda x, t_: engine.velocity(gen2, x, t_, side, side),
            lambda x, t_: engine.velocity(text_uncond, x, t_, side, side),
            lambda x, t_: engine.velocity(cimg2, x, t_, side, side),
        )
        _sync()
        timing["sampling_seconds"] = round(time.perf_counter() - t2, 3)
        t3 = time.perf_counter()
        img = engine.decode_latents(x, side, side)
        _sync()
        timing["vae_decode_seconds"] = round(time.perf_counter() - t3, 3)
        timing["turn_seconds"] = round(time.perf_counter() - t, 3)
        timing["context_tokens"] = gen2.kv_len
        timing["finite_latents"] = bool(torch.isfinite(x).all())
        return timing, img, gen2, cimg2

    _sync()
    t = time.perf_counter()
    gen = engine.add_image(Context(), source)
    _sync()
    out["source_context_seconds"] = round(time.perf_counter() - t, 3)
    out["turn1"], img1, gen, cimg = one_turn(gen, Context(), "add a red hat to the cat", [])
    t = time.perf_counter()
    gen = engine.add_image(gen, img1)
    _sync()
    out["add_output_to_context_seconds"] = round(time.perf_counter() - t, 3)
    out["turn2"], _, _, _ = one_turn(gen, cimg, "make it blue", ["add a red hat to the cat"])
    if not dry_run:
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    engine.model = engine.vae = None
    if not dry_run:
        torch.cuda.empty_cache()
    return out


def tiny_session(ckpt: Path, device: str, dtype: str) -> list:
    import numpy as np
    from PIL import Image

    from micebench.editors import create_editor
    from micebench.spec import EditRequest, Session, Turn

    ed = create_editor(
        "edit-r2",
        {"weights": str(ckpt), "resolution": 64, "steps": 2, "max_think_tokens": 12, "device": device, "dtype": dtype},
    )
    texts = ("add a red hat to the cat", "make it blue")
    turns = tuple(Turn(instruction=t, task_type="subject_add") for t in texts)
    sess = Session(id="s", suite="tiny", subset="cu", source_image="/x.png", turns=turns)
    src = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8))
    outs, eff = [], []
    for k in range(2):
        req = EditRequest(session=sess, turn_index=k, source_image=src, history_instructions=texts[:k],
                          history_effective=tuple(eff), history_images=tuple(outs), instruction=texts[k])  # fmt: skip
        r = ed.edit([req])[0]
        if r.error:
            raise RuntimeError(f"tiny {device}/{dtype}: {r.error}")
        outs.append(r.image)
        eff.append(r.effective_instruction)
    ed.close()
    return [np.asarray(o, dtype=np.float64) / 255.0 for o in outs]


def tiny_compare(with_gpu: bool) -> dict:
    from edit_r2_tiny import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="edit_r2_tiny_")))
    t = time.perf_counter()
    cpu = tiny_session(ckpt, "cpu", "float32")
    res: dict = {"cpu_seconds": round(time.perf_counter() - t, 2)}
    rerun = tiny_session(ckpt, "cpu", "float32")
    res["cpu_rerun_identical"] = all((a == b).all() for a, b in zip(cpu, rerun, strict=True))
    if with_gpu:
        for dtype in ("float32", "bfloat16"):
            gpu = tiny_session(ckpt, "cuda", dtype)
            diffs = [abs(g - c) for g, c in zip(gpu, cpu, strict=True)]
            res[f"gpu_{dtype}_vs_cpu"] = [
                {"turn": k + 1, "max_abs": round(float(d.max()), 4), "mean_abs": round(float(d.mean()), 5)}
                for k, d in enumerate(diffs)
            ]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU parts")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--think-tokens", type=int, default=300)
    ap.add_argument("--dry-run", action="store_true", help="run part 1's code with the tiny architecture on CPU")
    args = ap.parse_args(argv)
    import torch

    gpu = torch.cuda.is_available() and not args.cpu_only
    report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if gpu else None}
    if gpu:
        from micebench.editors.edit_r2.attention import flash_available

        report["flash_attn"] = flash_available()
    report["tiny"] = tiny_compare(gpu)
    if gpu:
        report["full_size"] = full_size_turns(args.steps, args.resolution, args.think_tokens)
    elif args.dry_run:
        report["full_size_dry_run_tiny_cpu"] = full_size_turns(args.steps, args.resolution, args.think_tokens, True)
    else:
        report["full_size"] = "not run: no GPU (use a CUDA machine)"
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "edit_r2_gpu.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
