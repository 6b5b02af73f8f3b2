"""Paper estimate: wall time of a full MICE-Bench run (720 sessions, 2,160 turns) with Edit-R2 and the
reference judge (Qwen2.5-VL-32B, 4 votes) on 1, 8 and 64 GPUs. Nothing here runs a model.

    python bench/scale_estimate.py                 # H100 SXM 80 GB, the assumptions below
    python bench/scale_estimate.py --gpu h200 --edit-mfu 0.15

Every number is computed from tensor shapes (shared/edit-r2/BAGEL_FACTS.md, Qwen2.5-VL-32B's
published config) and the assumptions printed with the result; docs/scale.md explains them and
says which inputs were measured (only the harness's own per-turn cost, on a CPU machine).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

GPUS = {  # dense bf16 peak FLOP/s, memory bandwidth B/s, memory bytes
    "h100": (989e12, 3.35e12, 80e9),
    "h200": (989e12, 4.8e12, 141e9),
}
SESSIONS, TURNS_PER_SESSION = 720, 3
VLM_TURN_FRACTION = 1468 / 2160  # turns whose IF rule asks the VLM (add, replace, colour, material, text,
#                                  background), counted from the real metadata

# -- Edit-R2 (BAGEL-7B-MoT), from BAGEL_FACTS.md -----------------------------------------------------
D, FF, LAYERS, HEADS_DIM = 3584, 18944, 28, 3584          # hidden, MLP, layers, heads x head_dim
KV_DIM = 512                                              # 4 KV heads x 128
LAYER_PARAMS = 2 * D * D + 2 * D * KV_DIM + 3 * D * FF    # one expert's projections + MLP: 233.0 M
TOKEN_FLOPS = 2 * LAYER_PARAMS * LAYERS                   # 13.05 GFLOP per token through 28 layers
UND_BYTES = (LAYER_PARAMS * LAYERS + 152064 * D) * 2      # weights read per decoded token (und expert + lm_head)
EDIT_WEIGHT_BYTES = 29.2e9 + 0.34e9


def attn_flops(q: int, kv: int) -> float:
    """QK^T and AV over all heads and layers for q queries against kv keys."""
    return 4.0 * q * kv * HEADS_DIM * LAYERS


@dataclass
class EditTurn:
    turn: int
    flops: float
    decode_tokens: int


def edit_turns(res: int = 512, steps: int = 50, text: int = 40, think_tokens: int = 200) -> list[EditTurn]:
    """FLOPs of each turn of a 3-turn session at ``res`` (square source and outputs)."""
    vae = (res // 16) ** 2 + 2                 # VAE tokens of an image chunk (with its two markers)
    vit = (res // 14) ** 2 + 2                 # ViT tokens (504 px used of 512)
    q = vae                                    # the generation query: latents + markers
    out = []
    context = vae + vit                        # the source image, VAE then ViT chunk
    texts = 0
    for k in range(1, TURNS_PER_SESSION + 1):
        flops = 0.0
        decode = 0
        if k > 1:                              # IC-CoT: prefill the rewrite request, decode the thought
            prompt = 80 + 60 * k
            flops += prompt * TOKEN_FLOPS + attn_flops(prompt, context + prompt)
            decode = think_tokens
        context += text
        texts += text
        per_step = 0.0
        for kv in (context + q, context - text + q, texts + q):   # cond, text-uncond, image-uncond
            per_step += q * TOKEN_FLOPS + attn_flops(q, kv)
        flops += (steps - 1) * per_step
        flops += 2.5e12                        # VAE decode at 512 (assumed; < 0.2 % of the turn)
        if k < TURNS_PER_SESSION:              # the output joins the context: VAE + ViT chunk prefill
            new = vae + vit
            flops += new * TOKEN_FLOPS + attn_flops(new, context + new) + 2 * 0.4e9 * vit * 4 + 1.5e12
            context += new
        out.append(EditTurn(k, flops, decode))
    return out


# -- judge: Qwen2.5-VL-32B-Instruct behind vLLM ---------------------------------------------------------
J_D, J_FF, J_LAYERS, J_KV = 5120, 27648, 64, 1024
J_LAYER_PARAMS = 2 * J_D * J_D + 2 * J_D * J_KV + 3 * J_D * J_FF
J_TOKEN_FLOPS = 2 * J_LAYER_PARAMS * J_LAYERS                    # 62.4 GFLOP per token
J_WEIGHT_BYTES = 66e9                                            # 33 B parameters in bf16
J_KV_BYTES_PER_TOKEN = J_LAYERS * 2 * J_KV * 2                  # 256 KiB
VIT_FLOPS_PER_IMAGE = 2 * 0.67e9 * 1296                          # 675 M-param ViT over 36x36 patches
IMAGE_TOKENS = 324                                               # 1296 patches merged 2x2


@dataclass
class JudgeTurn:
    prefill_tokens: float
    decode_tokens: float
    vit_flops: float
    longest_prompt: float


def judge_turn(votes: int = 4, ga_answer: int = 150, if_answer: int = 8, prefix_cache: bool = True) -> JudgeTurn:
    """Average VLM work of one turn: IF (two images, when its rule asks the VLM) and GA (source and
    every output so far), each ``votes`` times; with a prefix cache (vLLM's default) or ``n`` a vote's
    prompt is prefilled once."""
    prefill = decode = vit = 0.0
    longest = 0.0
    for t in range(1, TURNS_PER_SESSION + 1):
        if_prompt = 2 * IMAGE_TOKENS + 150
        ga_prompt = (t + 1) * IMAGE_TOKENS + 250 + 60 * t
        longest = max(longest, ga_prompt + ga_answer)
        times = 1 if prefix_cache else votes
        prefill += times * (VLM_TURN_FRACTION * if_prompt + ga_prompt)
        vit += times * (VLM_TURN_FRACTION * 2 + (t + 1)) * VIT_FLOPS_PER_IMAGE
        decode += votes * (VLM_TURN_FRACTION * if_answer + ga_answer)
    n = TURNS_PER_SESSION
    return JudgeTurn(prefill / n, decode / n, vit / n, longest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    ap.add_argument("--edit-mfu", type=float, nargs="+", default=[0.40, 0.15],
                    help="fraction of peak bf16 the editor reaches (good flash-attention port; batch-1 SDPA port)")
    ap.add_argument("--judge-mfu", type=float, default=0.45, help="vLLM prefill efficiency")
    ap.add_argument("--bw-eff", type=float, default=0.7, help="achieved fraction of memory bandwidth when decoding")
    ap.add_argument("--think-tokens", type=int, default=200, help="IC-CoT tokens decoded per turn (max 300)")
    ap.add_argument("--ga-answer", type=int, default=150, help="tokens of a GA answer (reasoning + tag)")
    ap.add_argument("--driver-ms", type=float, default=60.0,
                    help="harness work per turn on the driver at 512x512 (measured 16.6 ms at 256x256 on CPU)")
    ap.add_argument("--storage-gbs", type=float, default=10.0, help="aggregate read bandwidth of the checkpoint store")
    ap.add_argument("--vllm-start-s", type=float, default=180.0, help="vLLM server start (weights + graphs)")
    args = ap.parse_args()
    peak, bw, mem = GPUS[args.gpu]

    turns = edit_turns(think_tokens=args.think_tokens)
    session_flops = sum(t.flops for t in turns)
    decode_s = sum(t.decode_tokens for t in turns) * (UND_BYTES + 0.4e9) / (bw * args.bw_eff)
    jt = judge_turn(ga_answer=args.ga_answer)
    kv_budget = mem * 0.9 - J_WEIGHT_BYTES
    concurrent = max(1, int(kv_budget / (J_KV_BYTES_PER_TOKEN * jt.longest_prompt)))
    step_s = (J_WEIGHT_BYTES + concurrent * jt.longest_prompt * J_KV_BYTES_PER_TOKEN / 2) / (bw * args.bw_eff)
    judge_s = ((jt.prefill_tokens * J_TOKEN_FLOPS + jt.vit_flops) / (peak * args.judge_mfu)
               + jt.decode_tokens * step_s / concurrent)

    print(f"GPU {args.gpu}: {peak / 1e12:.0f} TFLOP/s bf16, {bw / 1e12:.2f} TB/s, {mem / 1e9:.0f} GB")
    print("\nEdit-R2, 512x512, 50 steps (49 evaluations x 3 CFG branches), per turn:")
    for t in turns:
        print(f"  turn {t.turn}: {t.flops / 1e15:.2f} PFLOP" + (f" + {t.decode_tokens} IC-CoT tokens decoded"
                                                              if t.decode_tokens else ""))
    print(f"  IC-CoT decoding, per session: {decode_s:.1f} s (memory-bound, batch 1)")
    print(f"\nJudge per turn: {jt.prefill_tokens:.0f} prompt tokens (4 votes share one prefill), "
          f"{jt.decode_tokens:.0f} decoded tokens; KV room for {concurrent} concurrent prompts on one GPU")
    print(f"  {judge_s:.2f} s per turn on one GPU (prefill at {args.judge_mfu:.0%} of peak, "
          f"decode {step_s * 1e3:.0f} ms per step for {concurrent} sequences)")

    for mfu in args.edit_mfu:
        session_s = session_flops / (peak * mfu) + decode_s
        print(f"\nEditor at {mfu:.0%} of peak: {session_s / 3:.1f} s per turn on average")
        print("  GPUs | edit (sessions/GPU) | judge  | model loads | driver busy | total  | bottleneck")
        for n in (1, 8, 64):
            per_gpu = math.ceil(SESSIONS / n)
            edit = per_gpu * session_s
            judge = SESSIONS * TURNS_PER_SESSION * judge_s / n
            load = n * EDIT_WEIGHT_BYTES / (args.storage_gbs * 1e9) + args.vllm_start_s
            load = max(load, EDIT_WEIGHT_BYTES / 3e9 + args.vllm_start_s)  # one reader: local NVMe ~3 GB/s
            driver = SESSIONS * TURNS_PER_SESSION * args.driver_ms / 1e3 / edit
            total = edit + judge + load
            parts = {"editor compute": edit, "judge": judge, "model loading / start-up": load}
            neck = max(parts, key=parts.get)
            print(f"  {n:4d} | {_t(edit):>9} ({per_gpu:3d})   | {_t(judge):>6} | {_t(load):>11} | "
                  f"{driver:10.0%}  | {_t(total):>6} | {neck}")


def _t(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
