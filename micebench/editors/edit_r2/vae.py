"""The FLUX autoencoder (``ae.safetensors``, BFL key names) and BAGEL's latent <-> token packing.

Encoding returns the scaled *mean* latent (Edit-R2 sets ``vae_donot_sample``): z = s * (mean - shift).
Decoding inverts the scaling. GroupNorm uses 32 groups as upstream; a width that 32 does not divide
(only in tiny test checkpoints) uses gcd(32, width) groups.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import CheckpointError, VAEConfig


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if ch % 32 == 0 else math.gcd(32, ch), ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, 1x1-conv projections."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (p(n).reshape(b, 1, c, h * w).transpose(-1, -2) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch)
        self.attn_1 = AttnBlock(ch)
        self.block_2 = ResnetBlock(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(cin, cfg.ch * mult))
                cin = cfg.ch * mult
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(cin)
            self.down.append(level)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        cin = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin)
        levels = []
        for i in reversed(range(len(cfg.ch_mult))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(cin, cfg.ch * cfg.ch_mult[i]))
                cin = cfg.ch * cfg.ch_mult[i]
            if i != 0:
                level.upsample = Upsample(cin)
            levels.insert(0, level)  # index 0 is the highest resolution
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoEncoder(nn.Module):
    """FLUX VAE: ``encode`` [B,3,H,W] in [-1,1] -> scaled latent; ``decode`` latent -> [-1,1] (unclamped)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.encoder(x)[:, : self.cfg.z_channels]
        return self.cfg.scale_factor * (mean - self.cfg.shift_factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z / self.cfg.scale_factor + self.cfg.shift_factor)


def infer_vae_config(shapes: dict[str, tuple[int, ...]], where: str) -> VAEConfig:
    """Read the VAE widths off ``ae.safetensors`` tensor shapes (official: ch 128, mult 1,2,4,4)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"{where}: tensor {key!r} missing")
        return shapes[key]

    ch, cin = shape("encoder.conv_in.weight")[:2]
    levels = 0
    while f"encoder.down.{levels}.block.0.conv1.weight" in shapes:
        levels += 1
    if levels == 0:
        raise CheckpointError(f"{where}: tensor 'encoder.down.0.block.0.conv1.weight' missing")
    mult = []
    for i in range(levels):
        out = shape(f"encoder.down.{i}.block.0.conv1.weight")[0]
        if out % ch:
            raise CheckpointError(f"{where}: encoder.down.{i} width {out} is not a multiple of conv_in width {ch}")
        mult.append(out // ch)
    blocks = 0
    while f"encoder.down.0.block.{blocks}.conv1.weight" in shapes:
        blocks += 1
    z = shape("decoder.conv_in.weight")[1]
    return VAEConfig(
        ch=ch,
        ch_mult=tuple(mult),
        num_res_blocks=blocks,
        in_channels=cin,
        out_ch=shape("decoder.conv_out.weight")[0],
        z_channels=z,
    )


def latent_to_tokens(latent: torch.Tensor, p: int = 2) -> torch.Tensor:
    """[C, H, W] latent -> [(H/p)(W/p), p*p*C] tokens, row-major, each ordered (pi, qi, c), c fastest."""
    c, h, w = latent.shape
    x = latent.reshape(c, h // p, p, w // p, p)
    return x.permute(1, 3, 2, 4, 0).reshape((h // p) * (w // p), p * p * c)


def tokens_to_latent(tokens: torch.Tensor, h: int, w: int, channels: int, p: int = 2) -> torch.Tensor:
    """Inverse of :func:`latent_to_tokens` for an h x w token grid: -> [C, h*p, w*p]."""
    x = tokens.reshape(h, w, p, p, channels)
    return x.permute(4, 0, 2, 1, 3).reshape(channels, h * p, w * p)
