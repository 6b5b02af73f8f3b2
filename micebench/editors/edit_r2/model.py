"""BAGEL: the MoT language model, the SigLIP encoder and the adapters that tie them to the VAE latents.

``BagelModel.state_dict()`` keys are exactly the keys of the official ``ema.safetensors``.
Also here: the fixed 2-D sin-cos position tables and the timestep embedding, both places where a
detail (which half holds the column, cosine first, t not scaled by 1000) is easy to get wrong.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .config import BagelConfig
from .llm import Qwen2MoTForCausalLM
from .vit import Connector, SiglipVisionModel


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[len(pos), dim] = concat(sin(p * w), cos(p * w)) with w_k = 10000^(-k / (dim/2)), float64."""
    if dim % 2:
        raise ValueError(f"sin-cos width {dim} must be even")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    args = np.outer(pos.astype(np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(args), np.cos(args)], axis=1)


def sincos_2d_table(dim: int, grid: int) -> torch.Tensor:
    """Fixed [grid*grid, dim] table: row r*grid + c = concat(E_{dim/2}(c), E_{dim/2}(r)), column first."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos width {dim} must be a multiple of 4")
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
    return torch.from_numpy(table).float()


def timestep_frequency_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[N] timesteps in [0, 1] (not scaled by 1000) -> [N, dim] = concat(cos(t f), sin(t f)), fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PositionTable(nn.Module):
    """Holds one frozen sin-cos table under the checkpoint name ``pos_embed``."""

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.pos_embed = nn.Parameter(sincos_2d_table(dim, grid), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[ids]


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_frequency_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class BagelModel(nn.Module):
    """Every weight of ``ema.safetensors``; the VAE lives apart (see :mod:`.vae`)."""

    def __init__(self, cfg: BagelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.llm.hidden_size
        self.language_model = Qwen2MoTForCausalLM(cfg.llm)
        self.vit_model = SiglipVisionModel(cfg.vit)
        self.connector = Connector(cfg.vit.hidden_size, d)
        self.vit_pos_embed = PositionTable(d, cfg.vit_max_num_patch_per_side)
        self.latent_pos_embed = PositionTable(d, cfg.max_latent_size)
        self.time_embedder = TimestepEmbedder(d, cfg.timestep_freq_dim)
        self.vae2llm = nn.Linear(cfg.patch_latent_dim, d)
        self.llm2vae = nn.Linear(d, cfg.patch_latent_dim)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.model.embed_tokens(ids)

    def vit_tokens(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """ViT patches -> LLM-width tokens: encoder, connector, + ``vit_pos_embed``."""
        x = self.vit_model(patches, position_ids)
        return self.connector(x) + self.vit_pos_embed(position_ids).to(x.dtype)

    def latent_tokens(self, latent_patches: torch.Tensor, t: float, rows: int, cols: int) -> torch.Tensor:
        """Packed latent patches [rows*cols, 64] at timestep t -> LLM-width tokens."""
        n = self.cfg.max_latent_size
        if rows > n or cols > n:
            raise ValueError(f"{rows}x{cols} latent tokens exceed the {n}x{n} latent position table")
        dtype = self.vae2llm.weight.dtype
        dev = latent_patches.device
        ids = (torch.arange(rows, device=dev)[:, None] * n + torch.arange(cols, device=dev)[None, :]).flatten()
        t_emb = self.time_embedder(torch.full((1,), float(t), device=latent_patches.device))
        return self.vae2llm(latent_patches.to(dtype)) + t_emb + self.latent_pos_embed(ids).to(dtype)
