"""Instructions for synthetic edits: varied phrasings for the generator, a text parser for the probes.

:func:`phrase` turns a structured edit into a raw instruction a person might write; :func:`formatted`
gives MICE-Bench's bracketed ``formatted_instruction``; :func:`parse` recovers the edit from raw text
alone (plus the scene state the editor keeps, and what earlier turns touched, for pronouns). The probe
editors use only :func:`parse`; a test checks that it recovers every generated edit.
"""

from __future__ import annotations

import random
import re
from typing import Any

from micebench.synth import scene

REL_PHRASES = {
    "left": ("to the left of", "on the left of", "left of"),
    "right": ("to the right of", "on the right of", "right of"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath"),
}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}

RULE_TEMPLATES = {
    "color": (
        "From now on, every object you add or change must be {v}, and nothing else may take on that color.",
        "Set a persistent rule for all following edits: whatever object is added or modified gets the color {v}; "
        "leave the background and untouched objects as they are.",
        "Standing constraint for this whole session: only the objects you add or modify should become {v}.",
    ),
    "material": (
        "From now on, every object you add or change must have a {v} surface; do not touch the others.",
        "Set a persistent rule for all following edits: whatever object is added or modified gets the {v} "
        "material, and the background and untouched objects keep theirs.",
        "Standing constraint for this whole session: only the objects you add or modify should become {v}.",
    ),
}
RULE_JOIN = " With this rule active, "

T = {
    "add": ("Add {a} {n}{rel}", "Put {a} {n}{rel}", "Draw {a} {n}{rel}", "Could you place {a} {n}{rel}?",
            "Insert {a} {n}{rel}"),
    "add_there": ("Put {a} {n} there", "Add {a} {n} there", "Draw {a} {n} there"),
    "remove": ("Remove the {x}", "Delete the {x}", "Get rid of the {x}", "Erase the {x}",
               "Take the {x} out of the picture"),
    "remove_p": ("Remove {it}", "Delete {it}", "Get rid of {it}", "Erase {it}"),
    "replace": ("Replace the {x} with {a} {n}", "Swap the {x} for {a} {n}", "Turn the {x} into {a} {n}"),
    "replace_p": ("Replace {it} with {a} {n}", "Swap {it} for {a} {n}", "Turn {it} into {a} {n}"),
    "color": ("Change the color of the {x} to {v}", "Make the {x} {v}", "Paint the {x} {v}",
              "Recolor the {x} in {v}"),
    "color_p": ("Change {its} color to {v}", "Make {it} {v}", "Paint {it} {v}"),
    "material": ("Change the material of the {x} to {v}", "Make the {x} {v}",
                 "Give the {x} a {v} texture", "Switch the {x} to a {v} material"),
    "material_p": ("Change {its} material to {v}", "Make {it} {v}", "Give {it} a {v} texture"),
    "text_add": ("Add the text '{new}' to the image", "Put a sign saying '{new}' somewhere",
                 "Write '{new}' on the image"),
    "text_add_p": ("Add text '{new}' on {it}",),
    "text_replace": ("Replace the text '{old}' on the sign with '{new}'",
                     "Change the sign that says '{old}' so it reads '{new}'",
                     "Make the sign read '{new}' instead of '{old}'"),
    "text_replace_p": ("Change {its} text to '{new}'", "Make {it} read '{new}'"),
    "position": ("Move the {x} {r} the {y}", "Put the {x} {r} the {y}", "Reposition the {x} so it sits {r} the {y}",
                 "Change the position of the {x} to {r} the {y}"),
    "position_p": ("Move {it} {r} the {y}", "Put {it} {r} the {y}"),
    "position_pa": ("Move the {x} {r} {it}", "Put the {x} {r} {it}"),
    "count": ("Change the count of {xs} to {k}", "I want exactly {k} {xs}", "There should be {k} {xs}",
              "Change the number of {xs} to {k}"),
    "count_p": ("Change {its} count to {k}", "Set {its} number to {k}"),
    "background": ("Change the background to {b}", "Make the background {b}", "Replace the background with {b}",
                   "Swap the background for {b}"),
    "background_p": ("Change the background behind {it} to {b}", "Put {it} on a {b} background"),
}


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def spec_name(spec: dict[str, Any]) -> str:
    """How an instruction names a new object: only the attributes it states (a rule may set the rest)."""
    words = [w for w in (spec.get("material"), spec.get("color")) if w and w != "plain"]
    return " ".join(words + [spec["shape"]])


def _target_name(state: dict[str, Any], k: Any) -> str:
    return scene.kind_name(*k, count=len(scene.objects_of_kind(state, tuple(k))))


def phrase(edit: dict[str, Any], state: dict[str, Any], rng: random.Random, pronoun: str | None = None) -> str:
    """A raw instruction for ``edit`` on ``state``. ``pronoun`` is None, "target" (refer to the edit's
    target with it/them), "anchor" (refer to the anchor) or "there" (an add at the previous place)."""
    task = edit["task"]
    group = False
    if edit.get("target") is not None:
        group = len(scene.objects_of_kind(state, tuple(edit["target"]))) > 1
    if pronoun == "anchor":
        group = False
    p = {"it": "them" if group else "it", "its": "their" if group else "its", "them": "them" if group else "it"}
    suf = "_p" if pronoun == "target" else ""
    fill: dict[str, str] = dict(p)
    if task == "subject_add":
        fill.update(n=spec_name(edit["new"]), a=article(spec_name(edit["new"])))
        if pronoun == "there":
            return rng.choice(T["add_there"]).format(**fill)
        rel = ""
        if edit.get("relation"):
            anchor = "it" if pronoun == "anchor" else "the " + _target_name(state, edit["anchor"])
            rel = f" {rng.choice(REL_PHRASES[edit['relation']])} {anchor}"
        fill["rel"] = rel
        return rng.choice(T["add"]).format(**fill)
    if task == "text_change":
        fill.update(new=edit["new"], old=edit.get("old") or "")
        key = "text_replace" if edit.get("old") else "text_add"
        return rng.choice(T[key + suf]).format(**fill)
    if task == "background_change":
        return rng.choice(T["background" + suf]).format(b=edit["background"], **p)
    fill["x"] = _target_name(state, edit["target"])
    if task == "subject_remove":
        return rng.choice(T["remove" + suf]).format(**fill)
    if task == "subject_replace":
        fill.update(n=spec_name(edit["new"]), a=article(spec_name(edit["new"])))
        return rng.choice(T["replace" + suf]).format(**fill)
    if task in ("color_alter", "material_alter"):
        key = "color" if task == "color_alter" else "material"
        return rng.choice(T[key + suf]).format(v=edit[key], **fill)
    if task == "position_change":
        fill.update(r=rng.choice(REL_PHRASES[edit["relation"]]), y=_target_name(state, edit["anchor"]))
        key = "position_pa" if pronoun == "anchor" else "position" + suf
        return rng.choice(T[key]).format(**fill)
    if task == "count_change":
        n = int(edit["count"])
        k = rng.choice([str(n), next(w for w, v in NUMBER_WORDS.items() if v == n)])
        fill.update(k=k, xs=scene.kind_name(*edit["target"], count=2))
        return rng.choice(T["count" + suf]).format(**fill)
    raise ValueError(f"unknown task {task!r}")


def formatted(edit: dict[str, Any], state: dict[str, Any]) -> str:
    """MICE-Bench's ``formatted_instruction``: targets in [brackets], pronouns resolved."""
    task = edit["task"]
    if task == "subject_add":
        base = f"Add [{spec_name(edit['new'])}]"
        if edit.get("relation"):
            base += f" on the [{edit['relation']}] of [{_target_name(state, edit['anchor'])}]"
        return base
    if task == "text_change":
        if edit.get("old"):
            return f"Replace the text '[{edit['old']}]' on [sign] with '[{edit['new']}]'"
        return f"Add text '[{edit['new']}]' on the image"
    if task == "background_change":
        return f"Change the background to [{edit['background']}]"
    x = _target_name(state, edit["target"])
    if task == "subject_remove":
        return f"Remove [{x}]"
    if task == "subject_replace":
        return f"Replace [{x}] with [{spec_name(edit['new'])}]"
    if task == "color_alter":
        return f"Change the color of [{x}] to [{edit['color']}]"
    if task == "material_alter":
        return f"Change the material of [{x}] to [{edit['material']}]"
    if task == "position_change":
        return f"Change the position of [{x}] to [{edit['relation']}] of [{_target_name(state, edit['anchor'])}]"
    if task == "count_change":
        return f"Change the count of [{x}] to [{edit['count']}]"
    raise ValueError(f"unknown task {task!r}")


# --------------------------------------------------------------------------------------------- parsing


class ParseError(ValueError):
    """An instruction the probe cannot turn into an edit (e.g. an unresolved pronoun)."""


_W = r"\b"
_MAT = "|".join(m for m in scene.MATERIALS)
_COL = "|".join(scene.COLORS)
_SHP = "|".join(scene.SHAPES + (scene.SIGN,))
MENTION = re.compile(rf"{_W}(?:({_MAT})\s+)?(?:({_COL})\s+)?({_SHP})(?:es|s)?{_W}")
PRONOUN = re.compile(r"\b(it|its|them|their|those|there)\b")
_REL = [(rel, ph) for rel, phs in REL_PHRASES.items() for ph in sorted(phs, key=len, reverse=True)]
RULE_CUE = re.compile(r"from now on|persistent rule|standing constraint", re.I)


def _relation(t: str) -> tuple[str, int] | None:
    best = None
    for rel, ph in _REL:
        m = re.search(rf"\b{re.escape(ph)}\b", t)
        if m and (best is None or m.start() < best[1]):
            best = (rel, m.start())
    return best


def _number(t: str) -> int:
    m = re.search(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", t)
    if not m:
        raise ParseError("no number in a count instruction")
    return int(m.group(1)) if m.group(1).isdigit() else NUMBER_WORDS[m.group(1)]


def split_rule(text: str) -> tuple[dict[str, str] | None, str]:
    """Split a cm first turn into (rule, edit text); (None, text) when there is no rule."""
    if not RULE_CUE.search(text):
        return None, text
    head, sep, tail = text.partition(RULE_JOIN.strip())
    if not sep:
        raise ParseError("a rule without 'With this rule active,'")
    low = head.lower()
    for c in scene.COLORS:
        if re.search(rf"\b{c}\b", low):
            return {"color": c}, tail.strip()
    for m in scene.MATERIALS:
        if re.search(rf"\b{m}\b", low):
            return {"material": m}, tail.strip()
    raise ParseError("a rule naming no colour or material")


def parse(text: str, state: dict[str, Any], referent: list[int] | None = None,
          there: list[int] | None = None) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Recover (edit, rule) from a raw instruction. ``referent`` are the ids an earlier turn touched
    (what it/them mean), ``there`` the cell an earlier turn emptied; without them a pronoun that
    carries the target raises :class:`ParseError`."""
    rule, body = split_rule(text)
    quotes = re.findall(r"'([^']*)'", body)
    t = body.lower()
    mentions = [(m.start(), m) for m in MENTION.finditer(t)]
    pron = [(m.start(), m.group(1)) for m in PRONOUN.finditer(t)]

    def ref_kind() -> list[str]:
        objs = [o for o in state["objects"] if o["id"] in (referent or [])]
        if not objs:
            raise ParseError(f"cannot tell what the pronoun in {body!r} refers to")
        return list(scene.kind(objs[0]))

    def existing(m: re.Match) -> list[str]:
        mat, col, shp = m.group(1) or "plain", m.group(2), m.group(3)
        if shp == scene.SIGN:
            return ["sign", "white", "plain"]
        if col is None:
            raise ParseError(f"{m.group(0)!r} names no colour")
        return [shp, col, mat]

    def spec(m: re.Match) -> dict[str, Any]:
        return {"shape": m.group(3), "color": m.group(2), "material": m.group(1)}

    if "background" in t:
        for b in scene.BACKGROUNDS:
            if re.search(rf"\b{b}\b", t):
                return {"task": "background_change", "background": b}, rule
        raise ParseError("no known background named")
    if quotes:
        if len(quotes) >= 2:
            old, new = (quotes[1], quotes[0]) if "instead of" in t else (quotes[0], quotes[1])
            return {"task": "text_change", "old": old, "new": new}, rule
        if re.search(r"\b(its|their) text\b|\bmake (it|them) read\b", t):
            objs = [o for o in state["objects"] if o["id"] in (referent or []) and o["shape"] == scene.SIGN]
            if not objs:
                raise ParseError("cannot tell which sign 'it' is")
            return {"task": "text_change", "old": objs[0]["text"], "new": quotes[0]}, rule
        return {"task": "text_change", "old": None, "new": quotes[0]}, rule
    rel = _relation(t)
    if re.search(r"\bcount\b|\bnumber\b|\bexactly\b|there should be", t):
        target = existing(mentions[0][1]) if mentions else ref_kind()
        return {"task": "count_change", "target": target, "count": _number(t)}, rule
    if re.search(r"\b(remove|delete|erase|get rid of)\b|\btake .* out\b", t):
        target = existing(mentions[0][1]) if mentions else ref_kind()
        return {"task": "subject_remove", "target": target}, rule
    if re.search(r"\b(replace|swap|turn)\b", t):
        if len(mentions) >= 2:
            return {"task": "subject_replace", "target": existing(mentions[0][1]), "new": spec(mentions[1][1])}, rule
        if len(mentions) == 1:
            return {"task": "subject_replace", "target": ref_kind(), "new": spec(mentions[0][1])}, rule
        raise ParseError("a replacement without a new object")
    if re.search(r"\b(move|reposition|position)\b|\bput (the|it|them)\b", t):
        if rel is None:
            raise ParseError("a move without a direction")
        before = [m for s, m in mentions if s < rel[1]]
        after = [m for s, m in mentions if s > rel[1]]
        target = existing(before[0]) if before else ref_kind()
        anchor = existing(after[0]) if after else ref_kind()
        return {"task": "position_change", "target": target, "relation": rel[0], "anchor": anchor}, rule
    if re.search(r"\b(add|draw|place|insert|put)\b", t):
        if not mentions:
            raise ParseError("an addition naming no shape")
        edit: dict[str, Any] = {"task": "subject_add", "new": spec(mentions[0][1]), "relation": None,
                                "anchor": None, "at_cell": None}
        if any(p == "there" for _, p in pron):
            if there is None:
                raise ParseError("cannot tell where 'there' is")
            edit["at_cell"] = list(there)
        elif rel is not None:
            after = [m for s, m in mentions if s > rel[1]]
            edit["relation"] = rel[0]
            edit["anchor"] = existing(after[0]) if after else ref_kind()
        return edit, rule
    value_t = MENTION.sub(" ", t)
    for m in scene.MATERIALS:
        if re.search(rf"\b{m}\b", value_t):
            target = existing(mentions[0][1]) if mentions else ref_kind()
            return {"task": "material_alter", "target": target, "material": m}, rule
    for c in scene.COLORS:
        if re.search(rf"\b{c}\b", value_t):
            target = existing(mentions[0][1]) if mentions else ref_kind()
            return {"task": "color_alter", "target": target, "color": c}, rule
    raise ParseError(f"cannot understand {body!r}")
