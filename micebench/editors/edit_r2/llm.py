"""Qwen2 Mixture-of-Transformers decoder (BAGEL's language model), inference only.

Two experts share one attention over a packed sequence: the base ("und") weights serve text, ViT
tokens and the image markers; the ``*_moe_gen`` weights serve VAE latent tokens. Module attribute
names follow the official checkpoint, so ``state_dict()`` keys are ``model.layers.N.self_attn.q_proj``...
(prefixed with ``language_model.`` in ``ema.safetensors``).

A forward pass handles one *chunk* (the new tokens) against the keys/values already cached, and
returns the chunk's keys/values (post QK-norm, post RoPE, in the attention dtype) for the caller to cache.
"""

from __future__ import annotations

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


Route = tuple  # None: all base expert; (start, end) ints: a span; (und_rows, gen_rows) index tensors


def routed(x: torch.Tensor, route: Route | None, f_und: Callable, f_gen: Callable) -> torch.Tensor:
    """Apply ``f_gen`` to the generation-expert rows of ``x`` and ``f_und`` to the others.

    ``route`` is None (every row to ``f_und``), a span ``(start, end)`` of ints (one chunk: the
    generation tokens of a BAGEL chunk are contiguous, between the two image markers, and slicing needs
    no GPU-to-host synchronisation), or two index tensors ``(und_rows, gen_rows)`` (a packed batch of
    chunks, each with its own markers).
    """
    if route is None:
        return f_und(x)
    a, b = route
    if isinstance(a, int):
        out_gen = f_gen(x[a:b])
        out_und = f_und(torch.cat([x[:a], x[b:]])).to(out_gen.dtype)
        return torch.cat([out_und[:a], out_gen, out_und[a:]])
    out_gen = f_gen(x.index_select(0, b))
    out_und = f_und(x.index_select(0, a)).to(out_gen.dtype)
    out = out_gen.new_empty((x.shape[0], *out_gen.shape[1:]))
    out.index_copy_(0, b, out_gen)
    return out.index_copy_(0, a, out_und)


class MoTAttention(nn.Module):
    """The two experts' projections and QK-norms. Attention itself is the caller's (a chunk's cache, or a
    packed plan), so that one layer serves both the one-chunk path and the packed path."""

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

    def project(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, route: Route | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [L, H, d] and k, v [L, Hkv, d] of the normed input ``h``: per-expert projections, QK-norm
        (fp32 in generation mode, i.e. whenever ``route`` is not None), RoPE, cast to the model dtype."""
        qkv = routed(h, route, lambda t: self._qkv(t, ""), lambda t: self._qkv(t, "_moe_gen"))
        fp32 = route is not None
        qkv = routed(qkv, route, lambda t: self._norm_qk(t, "", fp32), lambda t: self._norm_qk(t, "_moe_gen", fp32))
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1)
        q = apply_rope(q, cos.to(q.dtype), sin.to(q.dtype))
        k = apply_rope(k, cos.to(k.dtype), sin.to(k.dtype))
        dtype = h.dtype  # attention inputs (and the cache) in the model dtype: bf16 on GPU
        return q.to(dtype), k.to(dtype), v.to(dtype)

    def output(self, attn: torch.Tensor, route: Route | None) -> torch.Tensor:
        return routed(attn.reshape(attn.shape[0], -1), route, self.o_proj, self.o_proj_moe_gen)


Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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

    def attention_inputs(self, x, cos, sin, route):
        h = routed(x, route, self.input_layernorm, self.input_layernorm_moe_gen)
        return self.self_attn.project(h, cos, sin, route)

    def attention_outputs(self, x, attn, route):
        x = x + self.self_attn.output(attn, route).to(x.dtype)
        h = routed(x, route, self.post_attention_layernorm, self.post_attention_layernorm_moe_gen)
        return x + routed(h, route, self.mlp, self.mlp_moe_gen).to(x.dtype)

    def forward(self, x, cos, sin, attention: Attention, route: Route | None):
        """One layer; ``attention(q, k, v)`` sees this chunk's q/k/v and returns [L, H, d]."""
        q, k, v = self.attention_inputs(x, cos, sin, route)
        return self.attention_outputs(x, attention(q, k, v), route), (k, v)


def _layer_inputs(layer: MoTDecoderLayer, x, cos, sin, route):
    return layer.attention_inputs(x, cos, sin, route)


def _layer_outputs(layer: MoTDecoderLayer, x, attn, route):
    return layer.attention_outputs(x, attn, route)


class Qwen2MoTModel(nn.Module):
    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2MoTForCausalLM(nn.Module):
    """The language model. ``forward_chunk`` runs one chunk against a per-layer KV cache;
    ``forward_packed`` runs several chunks, each against its own cache, as one batch (see :mod:`.packed`)."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Qwen2MoTModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.round_inv_freq_to_bf16 = False
        self.attn_impl = "auto"
        self._inv_freq_cache: dict = {}
        self._layer_fns: tuple[Callable, Callable] = (_layer_inputs, _layer_outputs)

    def compile_layers(self, backend: str = "inductor") -> None:
        """torch.compile the per-layer work around attention (norms, projections, RoPE, MLPs) of the packed
        path; attention stays a direct kernel call. One compiled function serves every layer."""
        self._layer_fns = (
            torch.compile(_layer_inputs, backend=backend),
            torch.compile(_layer_outputs, backend=backend),
        )

    @property
    def compiled(self) -> bool:
        return self._layer_fns[0] is not _layer_inputs

    def rope_tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [L, head_dim] for ``positions``, computed in fp32 and handed over in ``dtype`` (as HF Qwen2)."""
        key = (positions.device, self.round_inv_freq_to_bf16)
        if self._inv_freq_cache.get("key") != key:  # computed once per device (no copy per call)
            inv = rope_inv_freq(self.cfg.head_dim, self.cfg.rope_theta, self.round_inv_freq_to_bf16)
            self._inv_freq_cache = {"key": key, "inv": inv.to(positions.device)}
        cos, sin = rope_cos_sin(positions, self._inv_freq_cache["inv"])
        return cos.to(dtype), sin.to(dtype)

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
        cos, sin = self.rope_tables(positions, embeds.dtype)
        x = embeds
        new_kv = []
        for i, layer in enumerate(self.model.layers):

            def attention(q, k, v, i=i):
                k_all, v_all = (k, v) if past is None else past.joined(i, k, v)
                return attend(q, k_all, v_all, causal=causal, impl=self.attn_impl)

            x, kv = layer(x, cos, sin, attention, gen_span)
            new_kv.append(kv)
        return x, new_kv

    def forward_packed(
        self,
        embeds: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan,
        route: Route | None = None,
        keep_kv: bool = False,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run the packed chunks ``embeds`` [sum L, D] (RoPE tables ``cos``/``sin`` per row) through every layer.

        ``plan`` (a :class:`.packed.PackedPlan`) knows which rows belong to which chunk and each chunk's
        cached keys; ``route`` is None (base expert) or ``(und_rows, gen_rows)`` (generation mode).
        Returns the last hidden states and, with ``keep_kv``, the packed new keys/values per layer.
        """
        before, after = self._layer_fns
        x = embeds
        new_kv = []
        for i, layer in enumerate(self.model.layers):
            q, k, v = before(layer, x, cos, sin, route)
            x = after(layer, x, plan.attend(i, q, k, v), route)
            if keep_kv:
                new_kv.append((k, v))
        return x, new_kv

    def final_norm(self, h: torch.Tensor, gen: bool) -> torch.Tensor:
        return self.model.norm_moe_gen(h) if gen else self.model.norm(h)
