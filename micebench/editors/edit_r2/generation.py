"""Text decoding on the understanding path and Edit-R2's IC-CoT intent reconstruction.

IC-CoT (turns 2+): on a scratch copy of the generation context (source image, earlier rewritten
instructions and generated images), append a "think, then answer" system text and a rewrite request
listing the ORIGINAL earlier instructions and the current one; greedily decode; the text after the
first ``</think>`` is the new instruction. Empty output, nothing after the tag, or no closing tag falls
back to the original instruction, and the caller records why.

The prompt texts live in :mod:`.prompts` (torch-free); the system text can be replaced through the
editor options.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batched import add_texts_batch
from .context import Context, Engine
from .packed import PackedPlan
from .prompts import IC_COT_MODES, TASKS, THINK_SYSTEM_PROMPT, mode_for_subset, rewrite_request

__all__ = [
    "IC_COT_MODES", "TASKS", "THINK_SYSTEM_PROMPT", "Rewrite", "extract_instruction", "greedy_decode",
    "greedy_decode_batch", "ic_cot_rewrite", "ic_cot_rewrite_batch", "mode_for_subset", "rewrite_request",
]  # fmt: skip


@dataclass(frozen=True)
class Rewrite:
    """Outcome of IC-CoT for one turn."""

    instruction: str  # the instruction to use: the rewrite, or the original on fallback
    raw_output: str  # the decoded text (think trace included)
    fallback: str | None  # None when the rewrite is used, else why not
    num_tokens: int


def extract_instruction(output: str, original: str) -> tuple[str, str | None]:
    """(instruction, fallback reason or None): the stripped text after the first ``</think>``."""
    text = output.strip()
    if not text:
        return original, "empty output"
    if "</think>" not in text:
        return original, "no closing </think> tag"
    answer = text.split("</think>", 1)[1].strip()
    if not answer:
        return original, "nothing after </think>"
    return answer, None


class _DecodeBuffer:
    """A context copied once into buffers with room for ``extra`` tokens, then grown in place."""

    def __init__(self, ctx: Context, extra: int) -> None:
        self.bufs = []
        for k, v in ctx.kv:
            kb = k.new_empty((k.shape[0] + extra,) + k.shape[1:])
            vb = v.new_empty((v.shape[0] + extra,) + v.shape[1:])
            kb[: k.shape[0]], vb[: v.shape[0]] = k, v
            self.bufs.append((kb, vb))
        self.n = ctx.kv_len

    def joined(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kb, vb = self.bufs[layer]
        end = self.n + k.shape[0]
        kb[self.n : end], vb[self.n : end] = k, v
        return kb[:end], vb[:end]


@torch.no_grad()
def greedy_tokens(engine: Engine, ctx: Context, max_length: int) -> list[int]:
    """Greedy tokens after ``ctx``: BOS first, stop at ``<|im_end|>`` (not kept); ``max_length`` counts BOS."""
    if not ctx.kv:
        raise ValueError("greedy_decode needs a non-empty context")
    llm = engine.llm
    buf = _DecodeBuffer(ctx, max_length)
    tokens = [engine.tok.bos_id]
    rope = ctx.rope
    while len(tokens) < max_length:
        ids = torch.tensor(tokens[-1:], device=engine.device)
        pos = torch.tensor([rope], device=engine.device)
        hidden, _ = llm.forward_chunk(engine.model.embed_tokens(ids), pos, buf, causal=True)
        buf.n += 1
        rope += 1
        logits = llm.lm_head(llm.final_norm(hidden[-1:], gen=False))
        nxt = int(logits[0].float().argmax())
        if nxt == engine.tok.eos_id:
            break
        tokens.append(nxt)
    return tokens


@torch.no_grad()
def greedy_tokens_batch(engine: Engine, ctxs: list[Context], max_length: int) -> list[list[int]]:
    """:func:`greedy_tokens` for several contexts at once: one packed forward per step over the sequences
    still running; a sequence that emits ``<|im_end|>`` leaves the batch (its keys are dropped)."""
    if any(not c.kv for c in ctxs):
        raise ValueError("greedy_decode needs a non-empty context")
    llm = engine.llm
    plan = PackedPlan.for_model(
        llm, ctxs, [1] * len(ctxs), causal=True, dtype=engine.dtype, device=engine.device, extra=max_length
    )
    tokens = [[engine.tok.bos_id] for _ in ctxs]
    ropes = [c.rope for c in ctxs]
    active = list(range(len(ctxs)))
    while active and len(tokens[active[0]]) < max_length:  # all running sequences have the same length
        ids = torch.tensor([tokens[i][-1] for i in active], device=engine.device)
        cos, sin = llm.rope_tables(torch.tensor([ropes[i] for i in active], device=engine.device), engine.dtype)
        hidden, _ = llm.forward_packed(engine.model.embed_tokens(ids), cos, sin, plan)
        logits = llm.lm_head(llm.final_norm(hidden, gen=False))
        nxt = logits.float().argmax(dim=-1).tolist()
        keep = []
        for j, (i, tok) in enumerate(zip(active, nxt, strict=True)):
            ropes[i] += 1
            if tok != engine.tok.eos_id:
                tokens[i].append(tok)
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(active):
            plan.select(keep)
            active = [active[j] for j in keep]
        if active and len(tokens[active[0]]) < max_length:
            plan.commit()
    return tokens


def decoded_text(engine: Engine, tokens: list[int]) -> str:
    """The text between the first ``<|im_start|>`` and the first ``<|im_end|>`` (special tokens kept, as BAGEL)."""
    text = engine.tok.decode(tokens)
    text = text.split("<|im_end|>")[0]
    parts = text.split("<|im_start|>")
    return parts[1] if len(parts) > 1 else parts[0]


def greedy_decode(engine: Engine, ctx: Context, max_length: int) -> tuple[str, int]:
    """Greedy text after ``ctx``: BOS first, stop at ``<|im_end|>`` (not emitted); ``max_length`` counts BOS.

    Returns the decoded text between the first ``<|im_start|>`` and the first ``<|im_end|>`` (decoded with
    special tokens kept, as BAGEL does) and the number of generated tokens.
    """
    tokens = greedy_tokens(engine, ctx, max_length)
    return decoded_text(engine, tokens), len(tokens) - 1


def greedy_decode_batch(engine: Engine, ctxs: list[Context], max_length: int) -> list[tuple[str, int]]:
    """:func:`greedy_decode` for several contexts; a single context takes the one-sequence loop."""
    if len(ctxs) == 1:
        return [greedy_decode(engine, ctxs[0], max_length)]
    return [(decoded_text(engine, t), len(t) - 1) for t in greedy_tokens_batch(engine, ctxs, max_length)]


def ic_cot_rewrite(
    engine: Engine,
    gen: Context,
    history: list[str],
    current: str,
    mode: str,
    max_length: int = 300,
    system_prompt: str = THINK_SYSTEM_PROMPT,
    question: str | None = None,
) -> Rewrite:
    """Run IC-CoT on a scratch copy of ``gen`` (``gen`` itself is not changed). ``question``: the rewrite
    request to ask (e.g. the authors' text, see ``prompts.ic_cot_text``); default: this project's paraphrase."""
    scratch = engine.add_text(gen, system_prompt)
    scratch = engine.add_text(scratch, rewrite_request(history, current, mode) if question is None else question)
    raw, n = greedy_decode(engine, scratch, max_length)
    instruction, fallback = extract_instruction(raw, current)
    return Rewrite(instruction=instruction, raw_output=raw, fallback=fallback, num_tokens=n)


def ic_cot_rewrite_batch(
    engine: Engine,
    items: list[tuple[Context, list[str], str, str]],
    max_length: int = 300,
    system_prompt: str = THINK_SYSTEM_PROMPT,
    questions: list[str] | None = None,
) -> list[Rewrite]:
    """:func:`ic_cot_rewrite` for several turns ``(gen, history, current, mode)``, decoded as one batch.
    ``questions``: the rewrite request of each turn (default: this project's paraphrase)."""
    scratches = add_texts_batch(engine, [gen for gen, *_ in items], [system_prompt] * len(items))
    requests = questions or [rewrite_request(history, current, mode) for _, history, current, mode in items]
    scratches = add_texts_batch(engine, scratches, requests)
    decoded = greedy_decode_batch(engine, scratches, max_length)
    out = []
    for (raw, n), (_, _, current, _) in zip(decoded, items, strict=True):
        instruction, fallback = extract_instruction(raw, current)
        out.append(Rewrite(instruction=instruction, raw_output=raw, fallback=fallback, num_tokens=n))
    return out
