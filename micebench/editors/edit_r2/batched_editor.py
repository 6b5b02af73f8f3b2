"""The packed edit path of :class:`.editor.EditR2Editor`: a batch of turns (one per session) edited together.

Per batch: every session's contexts (carried, or rebuilt from the requests' histories together), then IC-CoT for the
turns that need it as ONE batched greedy decode (sequences leave the batch when they finish), then the
sampling loop with ONE packed forward per step (3 CFG branches x B turns, :class:`.batched.BranchBatch`),
ONE VAE decode, and the output images appended to the kept contexts in one batched pass (VAE encode, ViT,
and one packed LLM forward per chunk kind). Same per-turn results as the one-by-one path, within rounding.

If the batch fails (out of memory, one request's image too large for the position tables...), each
request is retried alone, so a failure stays with its own turn.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult

from .batched import BranchBatch, add_images_batch, add_texts_batch, decode_latents_batch
from .context import Context
from .generation import ic_cot_rewrite_batch
from .sampler import sample_batch


def rebuild_states(engine, requests: list[EditRequest]) -> list:
    """Session states rebuilt from the requests' histories, in lockstep: all source images in one batched
    append, then each earlier turn's instruction and output for all sessions together."""
    from .editor import SessionState, image_fingerprint

    n = len(requests)
    if not n:
        return []
    gens = add_images_batch(engine, [Context()] * n, [r.source_image for r in requests])
    cimgs = [Context()] * n
    used = [list(r.history_effective) if r.history_effective else list(r.history_instructions) for r in requests]
    for j in range(max(len(u) for u in used)):
        idx = [i for i in range(n) if j < len(used[i])]
        texts = [used[i][j] for i in idx]
        new_gens = add_texts_batch(engine, [gens[i] for i in idx], texts)
        new_cimgs = add_texts_batch(engine, [cimgs[i] for i in idx], texts)
        new_gens = add_images_batch(engine, new_gens, [requests[i].history_images[j] for i in idx])
        for i, g, ci in zip(idx, new_gens, new_cimgs, strict=True):
            gens[i], cimgs[i] = g, ci
    states = []
    for g, ci, r, u in zip(gens, cimgs, requests, used, strict=True):
        last = image_fingerprint(r.history_images[-1]) if r.history_images else ""
        states.append(SessionState(g, ci, r.turn_index, list(r.history_instructions), u, last))
    return states


def edit_packed(editor, engine, requests: list[EditRequest]) -> list[EditResult]:
    """Edit ``requests`` (distinct sessions) together; on failure retry each alone (errors stay per turn)."""
    start = time.perf_counter()
    try:
        outputs = _edit_together(editor, engine, requests)
    except SetupError:
        raise
    except (RuntimeError, ValueError) as e:  # e.g. out of memory, a too-large image
        for req in requests:
            editor._sessions.pop(req.session.id, None)
        if len(requests) == 1:
            return [EditResult(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - start)]
        results = [res for req in requests for res in edit_packed(editor, engine, [req])]
        for res in results:  # say so: a retried batch is slower, and a bug here must not hide
            res.extra["batch_retried_after"] = f"{type(e).__name__}: {e}"[:300]
        return results
    seconds = (time.perf_counter() - start) / len(requests)  # a batch's time, shared by its turns
    return [
        EditResult(image=img, effective_instruction=eff, extra=extra, seconds=seconds) for img, eff, extra in outputs
    ]


@torch.no_grad()
def _edit_together(editor, engine, requests: list[EditRequest]) -> list[tuple[Any, str, dict]]:
    c = editor.config
    if len({r.session.id for r in requests}) != len(requests):
        raise ValueError("a batch holds at most one turn per session")
    extras: list[dict[str, Any]] = [{"batch_size": len(requests)} for _ in requests]
    states: list = []
    missing = []
    for i, req in enumerate(requests):
        state = editor._sessions.pop(req.session.id, None)
        if state is None or not state.matches(req):
            missing.append(i)
            state = None
            if req.turn_index > 0:
                extras[i]["context_rebuilt"] = True
                if not req.history_effective:
                    extras[i]["context_note"] = "history_effective not given: earlier raw instructions used"
        states.append(state)
    for i, state in zip(missing, rebuild_states(engine, [requests[i] for i in missing]), strict=True):
        states[i] = state

    # IC-CoT for the turns that need it, decoded together
    instructions = [r.instruction for r in requests]
    modes = [editor.ic_cot_mode(r) for r in requests]
    for extra, mode in zip(extras, modes, strict=True):
        extra["ic_cot_mode"] = mode
    todo = [i for i, r in enumerate(requests) if r.turn_index > 0 and modes[i] != "off"]
    if todo:
        items = [
            (states[i].gen, list(requests[i].history_instructions), requests[i].instruction, modes[i]) for i in todo
        ]
        text = editor._ic_cot_texts()
        questions = [text.question(history, current, mode) for _, history, current, mode in items]
        rewrites = ic_cot_rewrite_batch(engine, items, c.max_think_tokens, editor._ic_cot_system_prompt(), questions)
        from .editor import rewrite_extra

        for i, rw in zip(todo, rewrites, strict=True):
            instructions[i] = rw.instruction
            extras[i].update(rewrite_extra(rw))

    # the three contexts of each turn, then one packed forward per sampling step
    text_uncond = [s.gen for s in states]
    gens = add_texts_batch(engine, [s.gen for s in states], instructions)
    cimgs = add_texts_batch(engine, [s.cfg_img for s in states], instructions)
    side = c.resolution // engine.cfg.latent_downsample
    noise = torch.stack([editor._noise(engine, r, side) for r in requests]).to(engine.device)
    branches = BranchBatch(engine, list(zip(gens, text_uncond, cimgs, strict=True)), side, side)
    x = sample_batch(noise, editor._sampler_settings(), branches.velocities)
    branches.close()
    del text_uncond
    images = decode_latents_batch(engine, x, side, side)

    # carry the contexts of sessions with turns left; only as many as the cache keeps (LRU: the last ones)
    keep = [i for i, r in enumerate(requests) if r.turn_index < len(r.session.turns) - 1]
    keep = keep[-c.max_cached_sessions :] if c.max_cached_sessions > 0 else []
    if keep:
        carried = add_images_batch(engine, [gens[i] for i in keep], [images[i] for i in keep])
        for i, gen in zip(keep, carried, strict=True):
            editor._keep(requests[i], states[i], gen, cimgs[i], instructions[i], images[i])
    return list(zip(images, instructions, extras, strict=True))
