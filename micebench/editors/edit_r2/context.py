"""Contexts (KV cache + position counters) and the operations that grow them.

A :class:`Context` is immutable: adding a chunk returns a new context and leaves the old one usable,
so the text-CFG snapshot and the IC-CoT scratch copy cost nothing (BAGEL deep-copies instead).

Chunk rules (see BAGEL_FACTS section 2):
- text: ``<|im_start|>`` + tokens + ``<|im_end|>``, base expert, causal, consecutive RoPE positions.
- VAE image: markers + clean latent tokens (t = 0), generation expert for the latents, bidirectional;
  every token of the chunk shares ONE RoPE position and the counter advances by 1 only.
- ViT image: markers + connector tokens, base expert, bidirectional, one shared position, +1.
- generation query: like a VAE chunk with noisy latents at the current position; never cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .model import BagelModel
from .tokenizer import BagelTokenizer
from .vae import AutoEncoder, latent_to_tokens, tokens_to_latent
from .vit import extrapolate_position_ids, patchify

VAE_RESIZE = (1024, 512, 16)  # (max long edge, min short edge, stride) for the VAE path
VIT_RESIZE = (980, 224, 14)
MAX_PIXELS = 14 * 14 * 9 * 1024


def _round_to(side: float, stride: int) -> int:
    return max(stride, round(side / stride) * stride)


def resize_size(width: int, height: int, max_size: int, min_size: int, stride: int) -> tuple[int, int]:
    """BAGEL's resize rule: cap the long edge, raise the short edge, snap to the stride, cap the pixel count."""
    scale = max(min(max_size / max(width, height), 1.0), min_size / min(width, height))
    w, h = _round_to(width * scale, stride), _round_to(height * scale, stride)
    if w * h > MAX_PIXELS:
        s = (MAX_PIXELS / (w * h)) ** 0.5
        w, h = _round_to(w * s, stride), _round_to(h * s, stride)
    if max(w, h) > max_size:
        s = max_size / max(w, h)
        w, h = _round_to(w * s, stride), _round_to(h * s, stride)
    return w, h


def resize_image(img: Image.Image, rule: tuple[int, int, int]) -> Image.Image:
    w, h = resize_size(img.width, img.height, *rule)
    if (w, h) == img.size:
        return img
    return img.resize((w, h), Image.Resampling.BICUBIC)  # PIL's bicubic is antialiased, as torchvision's on PIL


def to_pixels(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> [3, H, W] fp32 in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() * 2.0 - 1.0


def to_uint8_image(pixels: torch.Tensor) -> Image.Image:
    """Decoder output [3, H, W] in [-1, 1] -> PIL, truncating as Edit-R2 does: (x * 255).clip().astype(uint8)."""
    x = (pixels.float() * 0.5 + 0.5).clamp(0, 1)
    arr = (x.permute(1, 2, 0).cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


@dataclass(frozen=True)
class Context:
    """Per-layer cached keys/values (post QK-norm and RoPE) plus the two counters of a BAGEL context."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    kv_len: int = 0
    rope: int = 0

    def joined(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.kv:
            return k, v
        ck, cv = self.kv[layer]
        return torch.cat([ck, k], dim=0), torch.cat([cv, v], dim=0)

    def extended(self, new_kv: list[tuple[torch.Tensor, torch.Tensor]], rope_advance: int) -> Context:
        n = new_kv[0][0].shape[0]
        kv = tuple(new_kv) if not self.kv else tuple(self.joined(i, k, v) for i, (k, v) in enumerate(new_kv))
        return Context(kv=kv, kv_len=self.kv_len + n, rope=self.rope + rope_advance)

    def to(self, device: torch.device | str) -> Context:
        return Context(tuple((k.to(device), v.to(device)) for k, v in self.kv), self.kv_len, self.rope)


class Engine:
    """The loaded model parts and the chunk operations on contexts. No state of its own beyond weights."""

    def __init__(self, model: BagelModel, vae: AutoEncoder, tokenizer: BagelTokenizer, device, dtype) -> None:
        self.model, self.vae, self.tok = model, vae, tokenizer
        self.device, self.dtype = torch.device(device), dtype
        self.cfg = model.cfg
        self.vae_resize = VAE_RESIZE  # context images: BAGEL's (1024, 512, 16); tests may lower the 512

    @property
    def llm(self):
        return self.model.language_model

    def _marker_ids(self) -> torch.Tensor:
        return torch.tensor([self.tok.vision_start_id, self.tok.vision_end_id], device=self.device)

    def _image_chunk(self, tokens: torch.Tensor) -> torch.Tensor:
        start, end = self.model.embed_tokens(self._marker_ids())
        return torch.cat([start[None], tokens.to(start.dtype), end[None]], dim=0)

    @torch.no_grad()
    def add_text(self, ctx: Context, text: str) -> Context:
        ids = [self.tok.bos_id, *self.tok.encode(text), self.tok.eos_id]
        embeds = self.model.embed_tokens(torch.tensor(ids, device=self.device))
        positions = torch.arange(ctx.rope, ctx.rope + len(ids), device=self.device)
        _, new_kv = self.llm.forward_chunk(embeds, positions, ctx, causal=True)
        return ctx.extended(new_kv, rope_advance=len(ids))

    @torch.no_grad()
    def add_image(self, ctx: Context, img: Image.Image) -> Context:
        """VAE chunk then ViT chunk of the VAE-resized image (each takes one RoPE position)."""
        img = resize_image(img.convert("RGB"), self.vae_resize)
        ctx = self._add_vae_chunk(ctx, img)
        return self._add_vit_chunk(ctx, img)

    def encode_latent_tokens(self, img: Image.Image) -> tuple[torch.Tensor, int, int]:
        pixels = to_pixels(img).to(self.device)
        vae_dtype = next(self.vae.parameters()).dtype
        latent = self.vae.encode(pixels[None].to(vae_dtype))[0].float()
        p = self.cfg.latent_patch_size
        return latent_to_tokens(latent, p), latent.shape[1] // p, latent.shape[2] // p

    def _gen_chunk(self, ctx: Context, latent_patches: torch.Tensor, t: float, rows: int, cols: int):
        tokens = self.model.latent_tokens(latent_patches, t, rows, cols)
        embeds = self._image_chunk(tokens)
        n = embeds.shape[0]
        gen_span = (1, n - 1)  # the latents; the two markers use the base expert
        positions = torch.full((n,), ctx.rope, device=self.device)
        hidden, new_kv = self.llm.forward_chunk(embeds, positions, ctx, causal=False, gen_span=gen_span)
        return hidden, new_kv

    def _add_vae_chunk(self, ctx: Context, img: Image.Image) -> Context:
        patches, rows, cols = self.encode_latent_tokens(img)
        _, new_kv = self._gen_chunk(ctx, patches, 0.0, rows, cols)
        return ctx.extended(new_kv, rope_advance=1)

    def _add_vit_chunk(self, ctx: Context, img: Image.Image) -> Context:
        img = resize_image(img, VIT_RESIZE)
        p = self.cfg.vit.patch_size
        patches = patchify(to_pixels(img), p).to(self.device, self.dtype)
        ids = extrapolate_position_ids(img.height // p, img.width // p, self.cfg.vit_max_num_patch_per_side)
        tokens = self.model.vit_tokens(patches, ids.to(self.device))
        embeds = self._image_chunk(tokens)
        positions = torch.full((embeds.shape[0],), ctx.rope, device=self.device)
        _, new_kv = self.llm.forward_chunk(embeds, positions, ctx, causal=False)
        return ctx.extended(new_kv, rope_advance=1)

    @torch.no_grad()
    def velocity(self, ctx: Context, x: torch.Tensor, t: float, rows: int, cols: int) -> torch.Tensor:
        """Predicted v = eps - x0 [rows*cols, 64] (fp32) for noisy latent patches ``x`` at time ``t``."""
        hidden, _ = self._gen_chunk(ctx, x.to(self.device), t, rows, cols)
        h = self.llm.final_norm(hidden[1:-1], gen=True)
        return self.model.llm2vae(h.to(self.model.llm2vae.weight.dtype)).float()

    @torch.no_grad()
    def decode_latents(self, x: torch.Tensor, rows: int, cols: int) -> Image.Image:
        latent = tokens_to_latent(x, rows, cols, self.cfg.latent_channel, self.cfg.latent_patch_size)
        vae_dtype = next(self.vae.parameters()).dtype
        return to_uint8_image(self.vae.decode(latent[None].to(self.device, vae_dtype))[0])
