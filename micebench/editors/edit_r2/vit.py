"""SigLIP NaViT vision encoder as BAGEL uses it (understanding path), plus the connector MLP.

The patch embedding is stored as a Linear over flattened 14x14x3 patches ordered (row, col, channel),
channel fastest; position ids "extrapolate": ``row * 70 + col``. Attention is bidirectional within
one image; a batch holds images of one size, so no mask is needed. Attribute names follow the checkpoint
(``vit_model.vision_model.embeddings.patch_embedding`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTConfig


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """[3, H, W] -> [(H/p)(W/p), p*p*3], row-major patches, each vector ordered (row, col, channel)."""
    c, h, w = pixels.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not a multiple of the ViT patch size {patch}")
    x = pixels.reshape(c, h // patch, patch, w // patch, patch)
    return x.permute(1, 3, 2, 4, 0).reshape((h // patch) * (w // patch), patch * patch * c)


def extrapolate_position_ids(rows: int, cols: int, max_per_side: int) -> torch.Tensor:
    """Position ids ``r * max_per_side + c`` for a rows x cols grid (BAGEL's default, not interpolated)."""
    if rows > max_per_side or cols > max_per_side:
        raise ValueError(f"{rows}x{cols} patches exceed the {max_per_side}x{max_per_side} position table")
    r = torch.arange(rows)[:, None]
    c = torch.arange(cols)[None, :]
    return (r * max_per_side + c).flatten()


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Linear(cfg.num_channels * cfg.patch_size**2, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(patches) + self.position_embedding(position_ids)


class SiglipAttention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d] (one image) or [B, n, d] (B images of one size): attention within each image."""
        *lead, n, d = x.shape
        b = x.numel() // (n * d)
        shape = (b, n, self.num_heads, d // self.num_heads)
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), no mask: whole images
        return self.out_proj(out.transpose(1, 2).reshape(*lead, n, d))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(patches, position_ids)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class SiglipVisionModel(nn.Module):
    """Wrapper that only exists so parameter names read ``vision_model.*`` as in the checkpoint."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.vision_model(patches, position_ids)


class Connector(nn.Module):
    """ViT width -> LLM width: fc1, gelu-tanh, fc2."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
