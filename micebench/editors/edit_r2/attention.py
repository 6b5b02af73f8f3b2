"""Attention kernels with the exact masking BAGEL's flash-attention calls imply.

BAGEL runs ``flash_attn_varlen_func(causal=...)``. With flash-attention >= 2.1 a causal call whose
query is shorter than its keys is aligned to the *bottom right*: query i of a new chunk of length Lq
appended after Lk - Lq cached keys may see key j iff ``j <= (Lk - Lq) + i``. PyTorch SDPA's
``is_causal=True`` is aligned top-left instead, so here the mask is always built explicitly.
Non-causal passes (image chunks, the generation query) use no mask at all.

flash-attention is optional and never installed by micebench: ``attn_impl="flash"`` without it is a
:class:`~micebench.errors.SetupError` (raised before any work); ``"auto"`` quietly uses SDPA.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from micebench.errors import SetupError

FLASH_MISSING = (
    "attn_impl=flash needs the flash-attn package (pip install flash-attn, on a CUDA machine); "
    "use attn_impl=sdpa or auto instead"
)


def bottom_right_causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean [q_len, k_len] mask, True where attention is allowed (flash-attn's causal alignment)."""
    if q_len > k_len:
        raise ValueError(f"causal chunk of {q_len} queries cannot follow only {k_len} keys")
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device)[:, None]
    cols = torch.arange(k_len, device=device)[None, :]
    return cols <= rows + offset


@functools.lru_cache(maxsize=1)
def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func  # type: ignore[import-not-found]
    except Exception:  # flash-attn is optional; any import failure means "use SDPA"
        return None
    return flash_attn_func


@functools.lru_cache(maxsize=1)
def _flash_attn_varlen_func():
    try:
        from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]
    except Exception:  # as above: optional
        return None
    return flash_attn_varlen_func


def flash_available() -> bool:
    return _flash_attn_func() is not None and _flash_attn_varlen_func() is not None


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel to use, ``flash`` or ``sdpa``, for a requested ``impl`` (``auto``: flash when installed,
    on CUDA, in 16-bit)."""
    if impl == "flash":
        if not flash_available():
            raise SetupError(FLASH_MISSING)
        return "flash"
    if impl == "auto" and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and flash_available():
        return "flash"
    if impl not in ("auto", "sdpa"):
        raise ValueError(f"unknown attention impl {impl!r}; expected auto, sdpa or flash")
    return "sdpa"


def flash_func():
    """flash-attention's dense kernel (one or more equal-length sequences); SetupError when not installed."""
    fn = _flash_attn_func()
    if fn is None:
        raise SetupError(FLASH_MISSING)
    return fn


def flash_varlen_func():
    """flash-attention's variable-length kernel (packed sequences); SetupError when not installed."""
    fn = _flash_attn_varlen_func()
    if fn is None:
        raise SetupError(FLASH_MISSING)
    return fn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, impl: str = "auto") -> torch.Tensor:
    """Multi-head attention for one sequence with grouped KV heads.

    ``q`` is [Lq, Hq, d]; ``k`` and ``v`` are [Lk, Hkv, d] with Hq a multiple of Hkv (query head h
    reads KV head h // (Hq / Hkv)). Returns [Lq, Hq, d]. The scale is 1/sqrt(d).
    ``impl``: "sdpa", "flash" (flash-attention, must be installed) or "auto" (flash when installed,
    on CUDA, in 16-bit; SDPA otherwise).
    """
    lq, hq, d = q.shape
    lk, hkv, _ = k.shape
    if hq % hkv:
        raise ValueError(f"{hq} query heads cannot share {hkv} KV heads")
    if resolve_impl(impl, q.device, q.dtype) == "flash":
        return flash_func()(q[None], k[None], v[None], causal=causal and lq > 1)[0]
    group = hq // hkv
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    mask = bottom_right_causal_mask(lq, lk, q.device) if causal and lq > 1 else None
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask
    )
    return out[0].transpose(0, 1)
