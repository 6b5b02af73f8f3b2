"""Generation of synthetic MICE-style sessions with exact per-turn ground truth.

:func:`generate_session` is a pure function of (seed, subset, index, turns, size): it draws a source
scene and a sequence of edits, phrases each edit as a raw instruction, and records for every turn the
target scene graph, the structured edit, the persistent rule, the touched objects and the kinds whose
counts GA checks. Subsets mirror MICE-Bench: ``cm`` opens with a persistent colour or material rule;
``cu`` refers back to the previous turn's object with it / its / them / there from turn 2 on.
"""

from __future__ import annotations

import random
from typing import Any

from micebench.spec import TASK_TYPES
from micebench.synth import language, scene
from micebench.synth.edits import SIGN_KIND, EditError, apply_edit

GENERATOR_VERSION = "1"
PRONOUN_RATE = 0.85  # cu turns 2+ that refer back with a pronoun


def source_scene(rng: random.Random, size: int, grid: int = 4) -> dict[str, Any]:
    n_kinds = rng.randint(3, 5)
    kinds: list[tuple[str, str, str]] = []
    while len(kinds) < n_kinds:
        k = (rng.choice(scene.SHAPES), rng.choice(list(scene.COLORS)),
             rng.choice(scene.MATERIALS) if rng.random() < 0.6 else "plain")
        if k not in kinds:
            kinds.append(k)
    counts = [1] * n_kinds
    if rng.random() < 0.5:
        counts[rng.randrange(n_kinds)] = rng.randint(2, 3)
    all_cells = [(r, c) for r in range(grid) for c in range(grid)]
    rng.shuffle(all_cells)
    objects, nid = [], 1
    for k, n in zip(kinds, counts, strict=False):
        for _ in range(n):
            r, c = all_cells.pop()
            objects.append({"id": nid, "shape": k[0], "color": k[1], "material": k[2], "cell": [r, c], "text": ""})
            nid += 1
    if rng.random() < 0.5:
        r, c = all_cells.pop()
        objects.append({"id": nid, "shape": scene.SIGN, "color": "white", "material": "plain", "cell": [r, c],
                        "text": rng.choice(scene.TEXT_WORDS)})
        nid += 1
    return {"size": size, "grid": grid, "background": rng.choice(list(scene.BACKGROUNDS)), "next_id": nid,
            "objects": objects}


def _kinds(state: dict[str, Any], single: bool = False, signs: bool = False) -> list[list[str]]:
    out: list[list[str]] = []
    for o in state["objects"]:
        k = list(scene.kind(o))
        if k in out or (o["shape"] == scene.SIGN and not signs):
            continue
        if single and len(scene.objects_of_kind(state, tuple(k))) != 1:
            continue
        out.append(k)
    return out


def _new_spec(rng: random.Random, rule: dict[str, str] | None, avoid_shape: str | None = None) -> dict[str, Any]:
    shape = rng.choice([s for s in scene.SHAPES if s != avoid_shape])
    color = None if rule and rule.get("color") else rng.choice(list(scene.COLORS))
    material = None if rule and rule.get("material") else (rng.choice(scene.MATERIALS) if rng.random() < 0.5 else None)
    return {"shape": shape, "color": color, "material": material}


def propose(task: str, state: dict[str, Any], rng: random.Random, rule: dict[str, str] | None,
            ref: list[str] | None, pronoun: str | None) -> dict[str, Any] | None:
    """A random edit of type ``task`` (None if the scene does not allow one). With ``pronoun`` set,
    the edit's target ("target") or anchor ("anchor") is the referent kind ``ref``."""
    singles = _kinds(state, single=True)
    anchors = _kinds(state, single=True, signs=True)
    kinds = _kinds(state)
    def pick_target(pool):
        return (ref if pronoun == "target" else (rng.choice(pool) if pool else None))
    if task == "subject_add":
        e: dict[str, Any] = {"task": task, "new": _new_spec(rng, rule), "relation": None, "anchor": None,
                             "at_cell": None}
        if pronoun == "anchor":
            e.update(relation=rng.choice(scene.RELATIONS), anchor=ref)
        elif pronoun is None and anchors and rng.random() < 0.6:
            e.update(relation=rng.choice(scene.RELATIONS), anchor=rng.choice(anchors))
        return e
    if task == "subject_remove":
        t = pick_target(kinds + _kinds(state, signs=True)[len(kinds):])
        return None if t is None else {"task": task, "target": t}
    if task == "subject_replace":
        t = pick_target(singles)
        if t is None or t[0] == scene.SIGN:
            return None
        return {"task": task, "target": t, "new": _new_spec(rng, rule, avoid_shape=t[0])}
    if task in ("color_alter", "material_alter"):
        key = "color" if task == "color_alter" else "material"
        t = pick_target(kinds)
        if t is None or t[0] == scene.SIGN or (rule and rule.get(key)):
            return None
        pool = list(scene.COLORS) if key == "color" else list(scene.MATERIALS)
        cur = t[1] if key == "color" else t[2]
        return {"task": task, "target": t, key: rng.choice([v for v in pool if v != cur])}
    if task == "text_change":
        signs = [o for o in state["objects"] if o["shape"] == scene.SIGN]
        if pronoun == "target" and (ref != list(SIGN_KIND) or not signs):
            return None
        old = signs[0]["text"] if signs else None
        new = rng.choice([w for w in scene.TEXT_WORDS if w != old])
        return {"task": task, "old": old, "new": new}
    if task == "position_change":
        if pronoun == "anchor":
            pool = [k for k in singles if k != ref]
            if not pool:
                return None
            t, a = rng.choice(pool), ref
        else:
            t = pick_target(singles)
            pool = [k for k in anchors if k != t]
            if t is None or t[0] == scene.SIGN or not pool:
                return None
            a = rng.choice(pool)
        return {"task": task, "target": t, "relation": rng.choice(scene.RELATIONS), "anchor": a}
    if task == "count_change":
        t = pick_target(kinds)
        if t is None or t[0] == scene.SIGN:
            return None
        cur = len(scene.objects_of_kind(state, tuple(t)))
        return {"task": task, "target": t, "count": rng.choice([n for n in (1, 2, 3, 4) if n != cur])}
    if task == "background_change":
        return {"task": task, "background": rng.choice([b for b in scene.BACKGROUNDS if b != state["background"]])}
    raise ValueError(task)


def _names(state: dict[str, Any], ids: set[int]) -> list[str]:
    out: list[str] = []
    for o in state["objects"]:
        if o["id"] in ids:
            n = scene.obj_name(o, len(scene.objects_of_kind(state, scene.kind(o))))
            if n not in out:
                out.append(n)
    return out


def generate_session(seed: int, subset: str, index: int, turns: int, size: int) -> dict[str, Any]:
    """One session as plain data: {"id", "subset", "source": graph, "rule", "turns": [turn dicts]}."""
    if subset not in ("cm", "cu"):
        raise ValueError(f"subset must be 'cm' or 'cu', got {subset!r}")
    rng = random.Random(f"micebench-synth:{GENERATOR_VERSION}:{seed}:{subset}:{index}")
    src = source_scene(rng, size)
    rule = None
    if subset == "cm":
        key = "color" if index % 2 == 0 else "material"
        rule = {key: rng.choice(list(scene.COLORS) if key == "color" else list(scene.MATERIALS[1:]))}
    state = src
    src_ids = {o["id"] for o in src["objects"]}
    touched_so_far: set[int] = set()
    ga_kinds: list[list[str]] = []
    all_names = _names(src, src_ids)
    prev_touched: list[int] = []
    prev_removed_cell: list[int] | None = None
    out_turns = []
    for t in range(turns):
        preferred = TASK_TYPES[(index * turns + t) % len(TASK_TYPES)]
        order = [preferred] + rng.sample([x for x in TASK_TYPES if x != preferred], len(TASK_TYPES) - 1)
        chosen = None
        for attempt in range(60):
            task = order[attempt % len(order)] if attempt < len(order) else rng.choice(order)
            pronoun = None
            ref = None
            live_ref = [o for o in state["objects"] if o["id"] in prev_touched]
            if subset == "cu" and t > 0 and rng.random() < PRONOUN_RATE:
                if task == "subject_add" and prev_removed_cell is not None:
                    pronoun = "there"
                elif live_ref:
                    ref = list(scene.kind(live_ref[0]))
                    pronoun = "anchor" if task in ("subject_add", "position_change") and rng.random() < 0.5 \
                        else "target"
                    if task == "subject_add":
                        pronoun = "anchor" if len(scene.objects_of_kind(state, tuple(ref))) == 1 else None
            edit = propose(task, state, rng, rule, ref, pronoun if pronoun != "there" else None)
            if edit is None:
                continue
            if pronoun == "there":
                edit.update(relation=None, anchor=None, at_cell=list(prev_removed_cell))
            try:
                new_state, touched = apply_edit(state, edit, rule)
            except EditError:
                continue
            chosen = (edit, pronoun, new_state, touched)
            break
        if chosen is None:
            raise RuntimeError(f"synth session {subset}/{index}: no applicable edit at turn {t + 1}")
        edit, pronoun, new_state, touched = chosen
        text = language.phrase(edit, state, rng, pronoun if pronoun in ("target", "anchor", "there") else None)
        if t == 0 and rule:
            key, val = next(iter(rule.items()))
            text = rng.choice(language.RULE_TEMPLATES[key]).format(v=val) + language.RULE_JOIN + text
        fmt = language.formatted(edit, state)
        gone = [o for o in state["objects"] if o["id"] not in {p["id"] for p in new_state["objects"]}]
        for o in gone + [o for o in new_state["objects"] if o["id"] in touched]:
            k = list(scene.kind(o))
            if k not in ga_kinds:
                ga_kinds.append(k)
        touched_so_far |= set(touched) | {o["id"] for o in gone}
        unchanged = sorted(i for i in src_ids - touched_so_far if any(o["id"] == i for o in new_state["objects"]))
        for n in _names(new_state, {o["id"] for o in new_state["objects"]}):
            if n not in all_names:
                all_names.append(n)
        out_turns.append({
            "instruction": text,
            "task_type": edit["task"],
            "formatted_instruction": fmt,
            "unchanged_objects": _names(src, set(unchanged)),
            "all_objects": list(all_names),
            "bg_consistency": new_state["background"] == src["background"],
            "metadata": {
                "target": new_state, "edit": edit, "rule": rule, "touched": touched, "unchanged_ids": unchanged,
                "ga_kinds": [list(k) for k in ga_kinds], "pronoun": pronoun,
                "bg_locked": new_state["background"] != src["background"],
            },
        })
        prev_removed_cell = gone[0]["cell"] if edit["task"] in ("subject_remove",) and len(gone) == 1 else None
        prev_touched = touched if touched else [o["id"] for o in gone]
        state = new_state
    return {"id": f"synth-{subset}-{index:04d}", "subset": subset, "source": src, "rule": rule, "turns": out_turns}
