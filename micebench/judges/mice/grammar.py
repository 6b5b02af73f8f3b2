"""Parsing of MICE-Bench instructions.

``formatted_instruction`` carries the targets of a turn in ``[brackets]``; each task type has a
fixed sentence form (PROTOCOL.md section 2). :func:`parse_instruction` turns one into a
:class:`ParsedInstruction` or raises :class:`GrammarError` naming the task type and the text.
Empty brackets parse (they are real items of the data set); the IF rules decide what an empty
target means.

cm sessions open with a persistent rule ("... With this rule active, <edit>"); :func:`split_rule`
separates the rule from the edit so the GA judge can state it on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_B = r"\[([^\]]*)\]"  # one bracketed field, possibly empty

#: task type -> list of (form name, compiled pattern, field names), tried in order.
_FORMS: dict[str, list[tuple[str, re.Pattern[str], tuple[str, ...]]]] = {
    "subject_add": [
        ("relative", re.compile(rf"Add {_B} on the {_B} of {_B}"), ("object", "direction", "reference")),
        ("plain", re.compile(rf"Add {_B}"), ("object",)),
    ],
    "subject_remove": [("plain", re.compile(rf"Remove {_B}"), ("object",))],
    "subject_replace": [("plain", re.compile(rf"Replace {_B} with {_B}"), ("object", "new_object"))],
    "color_alter": [("plain", re.compile(rf"Change the colou?r of {_B} to {_B}"), ("object", "color"))],
    "material_alter": [("plain", re.compile(rf"Change the material of {_B} to {_B}"), ("object", "material"))],
    "text_change": [
        (
            "replace",
            re.compile(rf"Replace the text '{_B}' on {_B} with '{_B}'"),
            ("old_text", "object", "new_text"),
        ),
        ("add", re.compile(rf"Add text '{_B}' on the image"), ("new_text",)),
    ],
    "position_change": [
        (
            "plain",
            re.compile(rf"Change the position of {_B} to {_B} of {_B}"),
            ("object", "direction", "reference"),
        )
    ],
    "count_change": [("plain", re.compile(rf"Change the count of {_B} to {_B}"), ("object", "count"))],
    "background_change": [("plain", re.compile(rf"Change the background to {_B}"), ("background",))],
}

DIRECTIONS = ("left", "right", "above", "below")


class GrammarError(ValueError):
    """A formatted instruction that does not have the sentence form of its task type."""


@dataclass(frozen=True)
class ParsedInstruction:
    """The bracketed fields of one formatted instruction."""

    task_type: str
    form: str
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)


def parse_instruction(task_type: str, formatted: str | None) -> ParsedInstruction:
    """Parse ``formatted`` by the forms of ``task_type``; field values are stripped, not lowercased."""
    if task_type not in _FORMS:
        raise GrammarError(f"unknown task type {task_type!r}")
    if not formatted or not formatted.strip():
        raise GrammarError(f"{task_type}: the turn has no formatted_instruction (targets in [brackets])")
    for form, pattern, names in _FORMS[task_type]:
        m = pattern.search(formatted)
        if m:
            values = {n: g.strip() for n, g in zip(names, m.groups(), strict=True)}
            if "direction" in values:
                d = values["direction"].lower()
                if d not in DIRECTIONS:
                    raise GrammarError(
                        f"{task_type}: direction {values['direction']!r} in {formatted!r} is not one of "
                        f"{', '.join(DIRECTIONS)}"
                    )
                values["direction"] = d
            if "count" in values and not re.fullmatch(r"\d+", values["count"]):
                raise GrammarError(f"{task_type}: count {values['count']!r} in {formatted!r} is not a whole number")
            return ParsedInstruction(task_type=task_type, form=form, fields=values, text=formatted)
    expected = " | ".join(p.pattern.replace(_B, "[...]") for _, p, _ in _FORMS[task_type])
    raise GrammarError(f"{task_type}: {formatted!r} does not match the expected form {expected}")


_RULE_SPLIT = re.compile(r"^(?P<rule>.*?)\s*With this rule active,\s*(?P<edit>.*)$", re.DOTALL)


@dataclass(frozen=True)
class RuleSplit:
    rule: str  # "" when the instruction sets no persistent rule
    edit: str


def split_rule(instruction: str) -> RuleSplit:
    """Split a cm turn-1 instruction into the persistent rule and the edit it precedes.

    The rule is everything before "With this rule active,"; an instruction without that marker
    sets no rule and is returned whole as the edit.
    """
    m = _RULE_SPLIT.match(instruction.strip())
    if not m:
        return RuleSplit(rule="", edit=instruction.strip())
    return RuleSplit(rule=m.group("rule").strip(), edit=m.group("edit").strip())


def strip_plural(name: str) -> str:
    """The naive singular upstream uses for subject_replace: drop a trailing 'es', else a trailing 's'."""
    if name.endswith("es"):
        return name[:-2]
    if name.endswith("s"):
        return name[:-1]
    return name
