"""Packed attention: several query chunks, each against its OWN cached context, in one kernel call per layer.

A *segment* is one context's cached keys/values followed by one new query chunk. During sampling the
segments of a step are the three CFG branches (cond, text-uncond, image-uncond) of every turn in the
batch; when images are appended to contexts they are the sessions of the batch; during batched IC-CoT
decoding they are the scratch contexts of the sessions, one token each. Each segment keeps its own keys,
values and RoPE positions: packing changes how the work is laid out, not what any query attends to.

Layouts of the per-layer key/value buffers (built once per plan; every forward only writes the new keys
into their slots, so 49 sampling steps copy the contexts once, not 49 times):

- ``flat`` (flash-attention's varlen kernel): one ``[sum(kv_i + q_i), Hkv, d]`` buffer per layer,
  segment after segment (cache, then the new-key slots); ``cu_seqlens`` delimit the segments and the
  kernel lets each query block see its own segment only (bottom-right causal for causal chunks).
- ``padded``: ``[S, cap, Hkv, d]``, one row per segment, zero padding. On the CPU: ONE SDPA call with a
  block mask ``[S, 1, Lq, keys]`` that lets query j of segment i see keys ``< kv_i + q_i`` (and
  ``<= kv_i + j`` when causal); its cost grows with S * longest segment, not with (sum of lengths)^2 as
  one dense block-diagonal mask over the flat layout would. On a GPU without flash-attn: one unmasked
  SDPA call per segment on views of the buffer (the matmuls around attention stay packed).

Growable plans (``extra`` > 0, batched decoding) are always padded: :meth:`PackedPlan.commit` keeps the
last keys, :meth:`PackedPlan.select` drops finished segments. With flash-attn they call the dense flash
kernel once per segment on views of the buffer (decoding is a small share of a turn).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .attention import attend, flash_varlen_func, resolve_impl


class PackedPlan:
    """The attention layout of one packed forward: which rows belong to which segment, and the caches."""

    def __init__(
        self,
        contexts: Sequence,
        q_lens: Sequence[int],
        *,
        causal: bool,
        impl: str,
        num_layers: int,
        num_heads: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        extra: int = 0,
        per_segment: bool | None = None,
    ) -> None:
        if len(contexts) != len(q_lens) or not contexts:
            raise ValueError("a packed plan needs one query length per context, and at least one context")
        if min(q_lens) < 1:
            raise ValueError(f"every segment needs at least one query row, got lengths {list(q_lens)}")
        self.causal, self.impl, self.device, self.dtype = causal, impl, torch.device(device), dtype
        self.num_heads, self.kv_heads, self.head_dim = num_heads, kv_heads, head_dim
        self.kv_lens = [int(c.kv_len) for c in contexts]
        self.q_lens = [int(n) for n in q_lens]
        self.layout = "flat" if impl == "flash" and extra == 0 else "padded"
        # padded layout: one masked SDPA call over all segments on the CPU (few big calls beat many small
        # ones); on a GPU one unmasked kernel call per segment on views of the buffer (no padded work, the
        # same fast kernel as the one-chunk path; each segment is big enough to fill the GPU)
        self.per_segment = (impl == "flash" or self.device.type != "cpu") if per_segment is None else per_segment
        ends = [k + q for k, q in zip(self.kv_lens, self.q_lens, strict=True)]
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        if self.layout == "flat":
            for layer in range(num_layers):
                for i, bufs in enumerate((self.k, self.v)):
                    pieces = []
                    for ctx, q in zip(contexts, self.q_lens, strict=True):
                        if ctx.kv:
                            pieces.append(ctx.kv[layer][i].to(device, dtype))
                        pieces.append(torch.empty((q, kv_heads, head_dim), dtype=dtype, device=device))
                    bufs.append(torch.cat(pieces))
        else:
            cap = max(ends) + extra
            for layer in range(num_layers):
                for i, bufs in enumerate((self.k, self.v)):
                    buf = torch.zeros((len(contexts), cap, kv_heads, head_dim), dtype=dtype, device=device)
                    for s, ctx in enumerate(contexts):  # zeros, not garbage: 0 * NaN would poison masked keys
                        if ctx.kv:
                            buf[s, : ctx.kv_len] = ctx.kv[layer][i]
                    bufs.append(buf)
        self._index()

    @classmethod
    def for_model(cls, llm, contexts: Sequence, q_lens: Sequence[int], *, causal: bool, dtype, device, extra=0):
        """A plan for ``llm`` (a :class:`.llm.Qwen2MoTForCausalLM`), its ``attn_impl`` resolved for ``device``."""
        cfg = llm.cfg
        impl = resolve_impl(llm.attn_impl, torch.device(device), dtype)
        return cls(
            contexts, q_lens, causal=causal, impl=impl, num_layers=cfg.num_hidden_layers,
            num_heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            dtype=dtype, device=device, extra=extra,
        )  # fmt: skip

    # -- bookkeeping ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.q_lens)

    @property
    def rows(self) -> int:
        return sum(self.q_lens)

    def _index(self) -> None:
        """Slots of the new keys, query placement and the mask / cu_seqlens, from the current lengths."""
        dev = self.device
        ends = [k + q for k, q in zip(self.kv_lens, self.q_lens, strict=True)]
        self.max_q, self.max_k = max(self.q_lens), max(ends)
        if self.layout == "flat":
            starts = [0]
            for e in ends[:-1]:
                starts.append(starts[-1] + e)
            slots = [torch.arange(s + k, s + k + q) for s, k, q in zip(starts, self.kv_lens, self.q_lens, strict=True)]
            self.slots = torch.cat(slots).to(dev)
            self.cu_k = torch.tensor([0, *torch.tensor(ends).cumsum(0).tolist()], dtype=torch.int32, device=dev)
            self.cu_q = torch.tensor([0, *torch.tensor(self.q_lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
            return
        cap = self.k[0].shape[1]
        self.slots = torch.cat(
            [i * cap + k + torch.arange(q) for i, (k, q) in enumerate(zip(self.kv_lens, self.q_lens, strict=True))]
        ).to(dev)
        self.uniform_q = len(set(self.q_lens)) == 1
        self.q_rows = None
        if not self.uniform_q:
            self.q_rows = torch.cat([i * self.max_q + torch.arange(q) for i, q in enumerate(self.q_lens)]).to(dev)
        if not (self.causal and self.max_q > 1) and len(set(ends)) == 1:
            self.mask = None  # nothing padded, nothing causal: the plain kernel
            return
        keys = torch.arange(self.max_k)[None, None, :]
        rows = torch.arange(self.max_q)[None, :, None]
        end = torch.tensor(ends)[:, None, None]
        mask = keys < end
        if self.causal:
            mask = mask & (keys <= torch.tensor(self.kv_lens)[:, None, None] + rows)
        self.mask = mask[:, None].to(dev)  # [S, 1, Lq, keys]; padded query rows still see key 0 (no NaN)

    def commit(self) -> None:
        """Keep the keys just written (decoding): the next forward appends after them."""
        if self.layout != "padded":
            raise RuntimeError("only growable (padded) plans can keep their new keys")
        self.kv_lens = [k + q for k, q in zip(self.kv_lens, self.q_lens, strict=True)]
        if max(self.kv_lens) + self.max_q > self.k[0].shape[1]:
            raise RuntimeError("packed plan full: build it with more `extra` capacity")
        self._index()

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the segments ``keep`` (in that order), e.g. drop sequences that finished decoding."""
        if self.layout != "padded":
            raise RuntimeError("only padded plans can drop segments")
        idx = torch.tensor(list(keep), dtype=torch.long, device=self.device)
        self.k = [b.index_select(0, idx) for b in self.k]
        self.v = [b.index_select(0, idx) for b in self.v]
        self.kv_lens = [self.kv_lens[i] for i in keep]
        self.q_lens = [self.q_lens[i] for i in keep]
        self._index()

    # -- attention --------------------------------------------------------------------------------
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Write the new ``k``/``v`` [rows, Hkv, d] into their slots; attention of ``q`` [rows, H, d] per segment."""
        kb, vb = self.k[layer], self.v[layer]
        if self.layout == "flat":
            kb.index_copy_(0, self.slots, k)
            vb.index_copy_(0, self.slots, v)
            return flash_varlen_func()(
                q, kb, vb, self.cu_q, self.cu_k, self.max_q, self.max_k, causal=self.causal and self.max_q > 1
            )
        s, cap, hkv, d = kb.shape
        kb.view(s * cap, hkv, d).index_copy_(0, self.slots, k)
        vb.view(s * cap, hkv, d).index_copy_(0, self.slots, v)
        if self.per_segment:
            outs, row = [], 0
            for i, (n_kv, n_q) in enumerate(zip(self.kv_lens, self.q_lens, strict=True)):
                keys, vals = kb[i, : n_kv + n_q], vb[i, : n_kv + n_q]
                outs.append(attend(q[row : row + n_q], keys, vals, causal=self.causal, impl=self.impl))
                row += n_q
            return torch.cat(outs)
        h, lq = q.shape[1], self.max_q
        if self.uniform_q:
            qp = q.view(s, lq, h, d)
        else:
            qp = q.new_zeros((s * lq, h, d)).index_copy_(0, self.q_rows, q).view(s, lq, h, d)
        keys, vals = kb[:, : self.max_k].transpose(1, 2), vb[:, : self.max_k].transpose(1, 2)
        # grouped KV heads read in place (query head h uses KV head h // group), no repeated copy
        out = F.scaled_dot_product_attention(qp.transpose(1, 2), keys, vals, attn_mask=self.mask, enable_gqa=h != hkv)
        out = out.transpose(1, 2).reshape(s * lq, h, d)
        return out if self.uniform_q else out.index_select(0, self.q_rows)

    # -- results ----------------------------------------------------------------------------------
    def split(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Rows of a packed [rows, ...] tensor, one piece per segment."""
        return list(packed.split(self.q_lens))


def image_chunk_route(q_lens: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(und_rows, gen_rows)`` of packed image chunks: each chunk's two markers use the base expert,
    everything between them the generation expert."""
    und, gen, row = [], [], 0
    for n in q_lens:
        und += [row, row + n - 1]
        gen.append(torch.arange(row + 1, row + n - 1))
        row += n
    return torch.tensor(und, device=device), torch.cat(gen).to(device)
