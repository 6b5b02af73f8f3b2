"""Qwen2 Mixture-of-Transformers decoder (BAGEL's language model), inference only.

Two experts share one attention over a packed sequence: the base ("und") weights serve text, ViT
tokens and the image markers; the ``*_moe_gen`` weights serve VAE latent tokens. Module attribute
names follow the official checkpoint, so ``state_dict()`` keys are ``model.layers.N.self_attn.q_proj``...
(prefixed with ``language_model.`` in ``ema.safetensors``).

A forward pass handles one *chunk* (the new tokens) against the keys/values already cached, and
returns the chunk's keys/values (post QK-norm, post RoPE, in the attention dtype) for the caller to cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attend
from .config import LLMConfig


class KVSource(Protocol):
    """Something holding cached keys/values per layer (a context, or a growing decode buffer)."""

    def joined(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached keys/values of ``layer`` followed by the new chunk's ``k``/``v`` ([L, Hkv, d] each)."""
        ...


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: normalise in fp32, cast back to the input dtype, then scale by the weight."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_inv_freq(head_dim: int, theta: float, round_to_bf16: bool = False) -> torch.Tensor:
    """RoPE inverse frequencies theta^(-2k/d), k < d/2, in fp32.

    ``round_to_bf16`` reproduces Edit-R2's evaluation path, which casts the model (buffers included)
    to bf16 so the frequencies are rounded to bf16 before being used in fp32.
    """
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    return inv.to(torch.bfloat16).float() if round_to_bf16 else inv


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [L, head_dim] for integer positions (computed in fp32, rotate-half layout)."""
    freqs = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [L, H, d] rotated by per-token cos/sin [L, d] (Qwen2's non-interleaved form)."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def routed(x: torch.Tensor, gen_span: tuple[int, int] | None, f_und: Callable, f_gen: Callable) -> torch.Tensor:
    """Apply ``f_gen`` to rows ``gen_span[0]:gen_span[1]`` and ``f_und`` to the other rows.

    A span rather than a boolean mask: the generation tokens of a BAGEL chunk are always contiguous
    (between the two image markers), and slicing needs no GPU-to-host synchronisation.
    """
    if gen_span is None:
        return f_und(x)
    a, b = gen_span
    out_gen = f_gen(x[a:b])
    out_und = f_und(torch.cat([x[:a], x[b:]])).to(out_gen.dtype)
    return torch.cat([out_und[:a], out_gen, out_und[a:]])


class MoTAttention(nn.Module):
    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        kv = cfg.num_key_value_heads * hd
        for suffix in ("", "_moe_gen"):
            setattr(self, f"q_proj{suffix}", nn.Linear(d, cfg.num_attention_heads * hd, bias=True))
            setattr(self, f"k_proj{suffix}", nn.Linear(d, kv, bias=True))
            setattr(self, f"v_proj{suffix}", nn.Linear(d, kv, bias=True))
            setattr(self, f"o_proj{suffix}", nn.Linear(cfg.num_attention_heads * hd, d, bias=False))
            setattr(self, f"q_norm{suffix}", RMSNorm(hd, cfg.rms_norm_eps))
            setattr(self, f"k_norm{suffix}", RMSNorm(hd, cfg.rms_norm_eps))

    def _qkv(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        n = x.shape[0]
        q = getattr(self, f"q_proj{suffix}")(x).view(n, self.num_heads, self.head_dim)
        k = getattr(self, f"k_proj{suffix}")(x).view(n, self.num_kv_heads, self.head_dim)
        v = getattr(self, f"v_proj{suffix}")(x).view(n, self.num_kv_heads, self.head_dim)
        return torch.cat([q, k, v], dim=1)

    def _norm_qk(self, qkv: torch.Tensor, suffix: str, fp32: bool) -> torch.Tensor:
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1)
        if fp32:  # BAGEL's gen mode normalises and rotates q/k in fp32
            q, k = q.float(), k.float()
        q = getattr(self, f"q_norm{suffix}")(q)
        k = getattr(self, f"k_norm{suffix}")(k)
        return torch.cat([q, k, v.to(q.dtype)], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
        causal: bool,
        gen_span: tuple[int, int] | None,
        attn_impl: str,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``past(k, v)`` returns the cached keys/values followed by this chunk's (None: no cache)."""
        qkv = routed(x, gen_span, lambda h: self._qkv(h, ""), lambda h: self._qkv(h, "_moe_gen"))
        fp32 = gen_span is not None
        qkv = routed(qkv, gen_span, lambda h: self._norm_qk(h, "", fp32), lambda h: self._norm_qk(h, "_moe_gen", fp32))
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1)
        q = apply_rope(q, cos.to(q.dtype), sin.to(q.dtype))
        k = apply_rope(k, cos.to(k.dtype), sin.to(k.dtype))
        dtype = x.dtype  # attention inputs (and the cache) in the model dtype: bf16 on GPU
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        k_all, v_all = (k, v) if past is None else past(k, v)
        out = attend(q, k_all, v_all, causal=causal, impl=attn_impl).reshape(x.shape[0], -1)
        out = routed(out, gen_span, self.o_proj, self.o_proj_moe_gen)
        return out, (k, v)


class MoTDecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.self_attn = MoTAttention(cfg)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_moe_gen = MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, past, causal, gen_span, attn_impl):
        h = routed(x, gen_span, self.input_layernorm, self.input_layernorm_moe_gen)
        attn, kv = self.self_attn(h, cos, sin, past, causal, gen_span, attn_impl)
        x = x + attn.to(x.dtype)
        h = routed(x, gen_span, self.post_attention_layernorm, self.post_attention_layernorm_moe_gen)
        x = x + routed(h, gen_span, self.mlp, self.mlp_moe_gen).to(x.dtype)
        return x, kv


class Qwen2MoTModel(nn.Module):
    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2MoTForCausalLM(nn.Module):
    """The language model. ``forward_chunk`` runs new tokens against a per-layer KV cache."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Qwen2MoTModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.round_inv_freq_to_bf16 = False
        self.attn_impl = "auto"
        self._inv_freq_cache: dict = {}

    def forward_chunk(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        past: KVSource | None,
        causal: bool,
        gen_span: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run ``embeds`` [L, D] at RoPE ``positions`` [L] after the keys/values held by ``past``.

        ``gen_span`` (start, end) marks the rows routed to the generation expert; None means every
        token uses the base expert ("und" mode). Returns the last hidden states [L, D] (before the
        final norm) and the chunk's own keys/values per layer.
        """
        key = (positions.device, self.round_inv_freq_to_bf16)
        if self._inv_freq_cache.get("key") != key:  # computed once per device (no copy per call)
            inv = rope_inv_freq(self.cfg.head_dim, self.cfg.rope_theta, self.round_inv_freq_to_bf16)
            self._inv_freq_cache = {"key": key, "inv": inv.to(positions.device)}
        cos, sin = rope_cos_sin(positions, self._inv_freq_cache["inv"])
        cos, sin = cos.to(embeds.dtype), sin.to(embeds.dtype)  # HF Qwen2 hands cos/sin over in the model dtype
        x = embeds
        new_kv = []
        for i, layer in enumerate(self.model.layers):
            joiner = None if past is None else functools.partial(past.joined, i)
            x, kv = layer(x, cos, sin, joiner, causal, gen_span, self.attn_impl)
            new_kv.append(kv)
        return x, new_kv

    def final_norm(self, h: torch.Tensor, gen: bool) -> torch.Tensor:
        return self.model.norm_moe_gen(h) if gen else self.model.norm(h)
