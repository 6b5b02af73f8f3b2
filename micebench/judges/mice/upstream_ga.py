"""Global awareness as the Edit-R2 client computes it (``protocol=upstream``).

The prompt is the authors' (Chinese) text read from the user's checkout, listing the rounds their
way; the images [source, output 1, ..., output t] go as PNG; the answer's FIRST
``<answer_final> yes|no </answer_final>`` decides (case-insensitive); a reply without one counts
as 0, and a failed VLM call reads as "no" (0). The per-round ``<answer_turn_i>`` tags are read
only to explain the verdict in the reason; upstream does not score them.
"""

from __future__ import annotations

import re

from micebench.spec import Session

_FINAL = re.compile(r"<answer_final>\s*(yes|no)\s*</answer_final>", re.IGNORECASE)
_TURN = re.compile(r"<answer_turn_(\d+)>\s*(yes|no)\s*</answer_turn_\1>", re.IGNORECASE)


def build_ga_prompt_upstream(session: Session, turn_index: int, variant: str, texts) -> str:
    """The prompt for rounds 1..turn_index+1: raw instructions (stripped, as upstream's split does) and,
    for cu, the formatted instruction (the raw one when a turn has none)."""
    turns = session.turns[: turn_index + 1]
    instructions = [t.instruction.strip() for t in turns]
    formatted = [t.formatted_instruction if t.formatted_instruction is not None else t.instruction.strip()
                 for t in turns]  # fmt: skip
    return texts.ga(variant, instructions, formatted)


def read_answer_final(text: str) -> tuple[float, str]:
    """(1.0 or 0.0, what was read): the first ``<answer_final>`` tag; none -> 0.0, as upstream."""
    rounds = ", ".join(f"round {k}: {a.lower()}" for k, a in _TURN.findall(text))
    m = _FINAL.search(text)
    if not m:
        return 0.0, "upstream: no <answer_final> tag -> 0" + (f" ({rounds})" if rounds else "")
    verdict = m.group(1).lower()
    return (1.0 if verdict == "yes" else 0.0), f"<answer_final> {verdict}" + (f" ({rounds})" if rounds else "")
