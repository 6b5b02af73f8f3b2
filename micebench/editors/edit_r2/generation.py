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

from .context import Context, Engine
from .prompts import IC_COT_MODES, TASKS, THINK_SYSTEM_PROMPT, mode_for_subset, rewrite_request

__all__ = [
    "IC_COT_MODES", "TASKS", "THINK_SYSTEM_PROMPT", "Rewrite", "extract_instruction", "greedy_decode",
    "ic_cot_rewrite", "mode_for_subset", "rewrite_request",
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
def greedy_decode(engine: Engine, ctx: Context, max_length: int) -> tuple[str, int]:
    """Greedy text after ``ctx``: BOS first, stop at ``<|im_end|>`` (not emitted); ``max_length`` counts BOS.

    Returns the decoded text between the first ``<|im_start|>`` and the first ``<|im_end|>`` (decoded with
    special tokens kept, as BAGEL does) and the number of generated tokens.
    """
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
    text = engine.tok.decode(tokens)
    text = text.split("<|im_end|>")[0]
    parts = text.split("<|im_start|>")
    return (parts[1] if len(parts) > 1 else parts[0]), len(tokens) - 1


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
