"""Turn-synchronous batched work on the engine: several sessions' turns at once, one forward per step.

- :func:`add_texts_batch`: text chunks of several contexts as one packed causal forward.
- :func:`add_images_batch`: VAE encode and ViT pass batched over images of equal size, then the VAE chunks
  of all sessions as one packed LLM forward, then the ViT chunks as another.
- :class:`BranchBatch`: the sampling query of B turns x their CFG branches packed into one forward per
  sampling step (:mod:`.packed`).
- :func:`decode_latents_batch`: one VAE decode for the batch.

Every function returns what the one-at-a-time :class:`.context.Engine` methods return, per session, within
rounding (tests compare them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from PIL import Image

from .context import VIT_RESIZE, Context, Engine, resize_image, to_pixels, to_uint8_image
from .packed import PackedPlan, image_chunk_route
from .vae import latent_to_tokens, tokens_to_latent
from .vit import extrapolate_position_ids, patchify


def _by_size(images: Sequence[Image.Image]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[img.size].append(i)
    return groups


def vae_encode_batch(engine: Engine, images: Sequence[Image.Image]) -> list[tuple[torch.Tensor, int, int]]:
    """Latent patch tokens (fp32), rows, cols per image; images of one size share one encoder call."""
    out: list = [None] * len(images)
    vae_dtype = next(engine.vae.parameters()).dtype
    p = engine.cfg.latent_patch_size
    for idx in _by_size(images).values():
        pixels = torch.stack([to_pixels(images[i]) for i in idx]).to(engine.device, vae_dtype)
        latents = engine.vae.encode(pixels).float()
        for i, lat in zip(idx, latents, strict=True):
            out[i] = (latent_to_tokens(lat, p), lat.shape[1] // p, lat.shape[2] // p)
    return out


def vit_tokens_batch(engine: Engine, images: Sequence[Image.Image]) -> list[torch.Tensor]:
    """LLM-width ViT tokens per image (ViT-resized here); images of one size share one encoder call."""
    small = [resize_image(img, VIT_RESIZE) for img in images]
    p = engine.cfg.vit.patch_size
    out: list = [None] * len(images)
    for (w, h), idx in _by_size(small).items():
        patches = torch.stack([patchify(to_pixels(small[i]), p) for i in idx]).to(engine.device, engine.dtype)
        ids = extrapolate_position_ids(h // p, w // p, engine.cfg.vit_max_num_patch_per_side).to(engine.device)
        for i, tokens in zip(idx, engine.model.vit_tokens(patches, ids), strict=True):
            out[i] = tokens
    return out


def _markers(engine: Engine) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([engine.tok.vision_start_id, engine.tok.vision_end_id], device=engine.device)
    start, end = engine.model.embed_tokens(ids)
    return start, end


def _append_chunks(engine: Engine, ctxs: list[Context], chunks: list[torch.Tensor], gen: bool) -> list[Context]:
    """Append one bidirectional image chunk (markers included) to each context, as one packed forward;
    every token of a chunk sits at its context's current RoPE position, which then advances by one."""
    q_lens = [c.shape[0] for c in chunks]
    plan = PackedPlan.for_model(engine.llm, ctxs, q_lens, causal=False, dtype=engine.dtype, device=engine.device)
    positions = torch.cat([torch.full((n,), c.rope, device=engine.device) for c, n in zip(ctxs, q_lens, strict=True)])
    cos, sin = engine.llm.rope_tables(positions, engine.dtype)
    route = image_chunk_route(q_lens, engine.device) if gen else None
    _, kv = engine.llm.forward_packed(torch.cat(chunks), cos, sin, plan, route, keep_kv=True)
    return _extend(ctxs, plan, kv, [1] * len(ctxs))


@torch.no_grad()
def add_texts_batch(engine: Engine, ctxs: Sequence[Context], texts: Sequence[str]) -> list[Context]:
    """``engine.add_text`` for several contexts at once (one packed causal forward); one context takes
    ``engine.add_text`` itself."""
    if len(ctxs) != len(texts):
        raise ValueError("add_texts_batch needs one text per context")
    if len(ctxs) == 1:
        return [engine.add_text(ctxs[0], texts[0])]
    ids = [[engine.tok.bos_id, *engine.tok.encode(t), engine.tok.eos_id] for t in texts]
    q_lens = [len(i) for i in ids]
    plan = PackedPlan.for_model(engine.llm, ctxs, q_lens, causal=True, dtype=engine.dtype, device=engine.device)
    embeds = engine.model.embed_tokens(torch.tensor([t for i in ids for t in i], device=engine.device))
    positions = torch.cat([torch.arange(c.rope, c.rope + n) for c, n in zip(ctxs, q_lens, strict=True)])
    cos, sin = engine.llm.rope_tables(positions.to(engine.device), engine.dtype)
    _, kv = engine.llm.forward_packed(embeds, cos, sin, plan, None, keep_kv=True)
    return _extend(ctxs, plan, kv, [len(i) for i in ids])


def _extend(ctxs: Sequence[Context], plan: PackedPlan, kv: list, rope_advance: Sequence[int]) -> list[Context]:
    """Each context extended by its own rows of the packed new keys/values."""
    per_layer = [(plan.split(k), plan.split(v)) for k, v in kv]
    out = []
    for s, ctx in enumerate(ctxs):
        # a fresh context would keep views of the whole batch's keys: copy its own rows instead
        new = [(ks[s].clone(), vs[s].clone()) if not ctx.kv else (ks[s], vs[s]) for ks, vs in per_layer]
        out.append(ctx.extended(new, rope_advance=rope_advance[s]))
    return out


@torch.no_grad()
def add_images_batch(engine: Engine, ctxs: Sequence[Context], images: Sequence[Image.Image]) -> list[Context]:
    """``engine.add_image`` for several contexts at once: VAE chunk then ViT chunk of each VAE-resized image."""
    images = [resize_image(img.convert("RGB"), engine.vae_resize) for img in images]
    start, end = _markers(engine)

    def chunk(tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([start[None], tokens.to(start.dtype), end[None]], dim=0)

    latent = [
        chunk(engine.model.latent_tokens(patches, 0.0, rows, cols))
        for patches, rows, cols in vae_encode_batch(engine, images)
    ]
    ctxs = _append_chunks(engine, list(ctxs), latent, gen=True)
    return _append_chunks(engine, ctxs, [chunk(t) for t in vit_tokens_batch(engine, images)], gen=False)


@torch.no_grad()
def decode_latents_batch(engine: Engine, x: torch.Tensor, rows: int, cols: int) -> list[Image.Image]:
    """Final latents [B, rows*cols, 64] -> B images, one VAE decoder call."""
    c, p = engine.cfg.latent_channel, engine.cfg.latent_patch_size
    latents = torch.stack([tokens_to_latent(xi, rows, cols, c, p) for xi in x])
    vae_dtype = next(engine.vae.parameters()).dtype
    pixels = engine.vae.decode(latents.to(engine.device, vae_dtype))
    return [to_uint8_image(px) for px in pixels]


class BranchBatch:
    """The sampling query of B turns, each against up to three contexts (cond, text-uncond, image-uncond),
    packed into ONE forward per step. All turns share the output size (one latent grid)."""

    def __init__(self, engine: Engine, branches: Sequence[Sequence[Context]], rows: int, cols: int) -> None:
        if any(len(b) != len(branches[0]) for b in branches):
            raise ValueError("every turn of a branch batch needs the same number of branch contexts")
        self.engine, self.branches, self.rows, self.cols = engine, [list(b) for b in branches], rows, cols
        self._plan: tuple | None = None  # (n_branches, plan, cos, sin, route); one kept at a time
        self.start, self.end = _markers(engine)

    def _plan_for(self, n_branches: int):
        if self._plan is None or self._plan[0] != n_branches:
            self._plan = None  # free the old buffers before building the new ones
            e = self.engine
            ctxs = [c for turn in self.branches for c in turn[:n_branches]]
            n = self.rows * self.cols + 2
            plan = PackedPlan.for_model(e.llm, ctxs, [n] * len(ctxs), causal=False, dtype=e.dtype, device=e.device)
            positions = torch.tensor([c.rope for c in ctxs], device=e.device).repeat_interleave(n)
            cos, sin = e.llm.rope_tables(positions, e.dtype)
            self._plan = (n_branches, plan, cos, sin, image_chunk_route([n] * len(ctxs), e.device))
        return self._plan[1:]

    @torch.no_grad()
    def velocities(self, x: torch.Tensor, t: float, n_branches: int) -> torch.Tensor:
        """x [B, N, 64] noisy latent patches at time t -> v [B, n_branches, N, 64] (fp32)."""
        e, model = self.engine, self.engine.model
        plan, cos, sin, route = self._plan_for(n_branches)
        b, n = x.shape[0], x.shape[1]
        tokens = model.latent_tokens(x.to(e.device), t, self.rows, self.cols)  # [B, N, D]
        d = tokens.shape[-1]
        chunk = torch.cat(
            [self.start.expand(b, 1, d), tokens.to(self.start.dtype), self.end.expand(b, 1, d)], dim=1
        )  # [B, N + 2, D]
        embeds = chunk[:, None].expand(b, n_branches, n + 2, d).reshape(-1, d)
        hidden, _ = e.llm.forward_packed(embeds, cos, sin, plan, route)
        h = e.llm.final_norm(hidden.view(b, n_branches, n + 2, d)[:, :, 1:-1], gen=True)
        return model.llm2vae(h.to(model.llm2vae.weight.dtype)).float()

    def close(self) -> None:
        self._plan = None
