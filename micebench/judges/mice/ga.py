"""Global awareness (GA), PROTOCOL.md section 4: one VLM verdict on the whole session so far.

The VLM sees [source, output 1, ..., output t] and the raw instructions of turns 1..t, checks the
rounds in order, stops at the first failure, and ends with "FINAL: yes" or "FINAL: no". GA(t) of
one vote is 1 for yes, 0 for no. An answer without a final verdict is a failed vote (never 0).

- cm variant: the turn-1 rule (split off the turn-1 instruction) is stated on its own; a round
  passes only if its edit was followed and the rule holds on what the round touched.
- cu variant: each round also shows the bracketed formatted instruction (the resolved referent).
"""

from __future__ import annotations

import re

from micebench.judges.mice.grammar import split_rule
from micebench.judges.mice.if_rules import VoteFailed
from micebench.judges.mice.prompts import PromptSet
from micebench.judges.refusals import refusal
from micebench.spec import Session

_FINAL = re.compile(r"FINAL\s*:\s*\**\s*(yes|no)\b", re.IGNORECASE)


def ga_variant(session: Session, configured: str = "auto") -> str:
    """"cm" or "cu": the configured one, else the session's subset, else cm when turn 1 sets a rule."""
    if configured in ("cm", "cu"):
        return configured
    if session.subset in ("cm", "cu"):
        return session.subset
    return "cm" if split_rule(session.turns[0].instruction).rule else "cu"


def build_ga_prompt(session: Session, turn_index: int, variant: str, prompts: PromptSet) -> str:
    """The GA prompt for turns 1..turn_index+1 of ``session``."""
    turns = session.turns[: turn_index + 1]
    if variant == "cm":
        rule = split_rule(turns[0].instruction).rule
        if not rule:
            raise ValueError(f"session {session.id}: cm GA needs a turn-1 rule ('... With this rule active, ...')")
        rounds = "\n".join(f"Round {k}: {t.instruction}" for k, t in enumerate(turns, 1))
        return prompts.render("ga_cm", n_images=len(turns) + 1, rule=rule, rounds=rounds)
    lines = []
    for k, t in enumerate(turns, 1):
        lines.append(f"Round {k}: {t.instruction}")
        lines.append(f"Round {k} resolved: {t.formatted_instruction or t.instruction}")
    return prompts.render("ga_cu", n_images=len(turns) + 1, rounds="\n".join(lines))


def read_final(text: str, truncated: bool = False) -> bool:
    """The last "FINAL: yes/no" in the answer; none, or a refusal ("no images were provided"), ->
    :class:`VoteFailed`."""
    why = refusal(text)
    if why:
        raise VoteFailed(f"not a verdict: {why}", text)
    found = _FINAL.findall(text)
    if not found:
        why = "the answer was cut off at the token limit" if truncated else "the answer has no 'FINAL: yes/no' line"
        raise VoteFailed(why, text)
    return found[-1].lower() == "yes"
