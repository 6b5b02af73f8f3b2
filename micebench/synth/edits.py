"""Structured edits on scene graphs: the one place that says what each of the nine task types does.

An edit is JSON data, e.g. ``{"task": "color_alter", "target": ["circle", "red", "plain"], "color": "blue"}``
(kinds are [shape, color, material] lists). :func:`apply_edit` returns the new graph and the ids of the
objects the edit touched. A persistent rule (``{"color": "red"}`` or ``{"material": "striped"}``, from
a cm session's first turn) is applied to every object an edit adds or modifies: added, replacing,
recoloured, re-materialed and moved objects. Removals, count changes (new instances copy the existing
kind), text and background changes are exempt. The generator and the probe editors both call this, so
an editor that understood the instruction reproduces the ground truth exactly.
"""

from __future__ import annotations

from typing import Any

from micebench.synth import scene

SIGN_KIND = ("sign", "white", "plain")


class EditError(ValueError):
    """An edit that cannot be applied to a scene (missing target, no room, two kinds would merge)."""


def _kind(k: Any) -> tuple[str, str, str]:
    return (k[0], k[1], k[2])


def _targets(graph: dict[str, Any], k: Any) -> list[dict[str, Any]]:
    objs = scene.objects_of_kind(graph, _kind(k))
    if not objs:
        raise EditError(f"no {scene.kind_name(*_kind(k))} in the scene")
    return objs


def _apply_rule(obj: dict[str, Any], rule: dict[str, Any] | None) -> None:
    if not rule or obj["shape"] == scene.SIGN:
        return
    if rule.get("color"):
        obj["color"] = rule["color"]
    if rule.get("material"):
        obj["material"] = rule["material"]


def _new_object(graph: dict[str, Any], spec: dict[str, Any], cell: tuple[int, int], rule: dict[str, Any] | None,
                default_color: str | None = None) -> dict[str, Any]:
    color = spec.get("color") or (rule or {}).get("color") or default_color
    if color is None:
        raise EditError(f"no colour given for the new {spec['shape']}")
    obj = {"id": graph["next_id"], "shape": spec["shape"], "color": color,
           "material": spec.get("material") or (rule or {}).get("material") or "plain",
           "cell": [cell[0], cell[1]], "text": spec.get("text", "")}
    if spec["shape"] == scene.SIGN:
        obj["color"], obj["material"] = "white", "plain"
    graph["next_id"] += 1
    _apply_rule(obj, rule)
    return obj


def _check_unique(graph: dict[str, Any], changed: list[dict[str, Any]]) -> None:
    """Two groups may not merge into one kind: names must stay unambiguous."""
    changed_ids = {o["id"] for o in changed}
    for o in changed:
        if o["shape"] == scene.SIGN:
            continue
        clash = [p for p in graph["objects"] if p["id"] not in changed_ids and scene.kind(p) == scene.kind(o)]
        if clash:
            raise EditError(f"a {scene.obj_name(o)} already exists")


def apply_edit(graph: dict[str, Any], edit: dict[str, Any], rule: dict[str, Any] | None = None,
               default_color: str | None = None) -> tuple[dict[str, Any], list[int]]:
    """Apply ``edit`` to a copy of ``graph``; return (new graph, touched object ids).

    ``default_color`` is used for an added object whose colour neither the edit nor a rule gives
    (only a probe that forgot the rule needs it). Raises :class:`EditError` when the edit does not apply.
    """
    g = scene.copy_graph(graph)
    task = edit["task"]
    touched: list[dict[str, Any]] = []
    if task == "subject_add":
        if edit.get("at_cell") is not None:
            cell = tuple(edit["at_cell"])
            if cell not in scene.free_cells(g):
                raise EditError(f"cell {cell} is taken")
        elif edit.get("relation"):
            anchor = _targets(g, edit["anchor"])
            if len(anchor) != 1:
                raise EditError("the anchor of a relative placement must be a single object")
            cell = scene.place(g, edit["relation"], anchor[0]["cell"])
        else:
            cell = scene.place(g)
        if cell is None:
            raise EditError("no free cell for the new object")
        obj = _new_object(g, edit["new"], cell, rule, default_color)
        g["objects"].append(obj)
        touched = [obj]
    elif task == "subject_remove":
        objs = _targets(g, edit["target"])
        ids = {o["id"] for o in objs}
        g["objects"] = [o for o in g["objects"] if o["id"] not in ids]
    elif task == "subject_replace":
        objs = _targets(g, edit["target"])
        if len(objs) != 1:
            raise EditError("replace needs a single object")
        old = objs[0]
        g["objects"] = [o for o in g["objects"] if o["id"] != old["id"]]
        obj = _new_object(g, edit["new"], tuple(old["cell"]), rule, default_color)
        g["objects"].append(obj)
        touched = [obj]
    elif task in ("color_alter", "material_alter"):
        objs = _targets(g, edit["target"])
        key = "color" if task == "color_alter" else "material"
        for o in objs:
            o[key] = edit[key]
            _apply_rule(o, rule)
        touched = objs
    elif task == "position_change":
        objs = _targets(g, edit["target"])
        anchor = _targets(g, edit["anchor"])
        if len(objs) != 1 or len(anchor) != 1:
            raise EditError("position change needs a single object and a single anchor")
        o = objs[0]
        if scene.relation_holds(o["cell"], anchor[0]["cell"], edit["relation"]):
            raise EditError("the object already satisfies the relation")
        cell = scene.place(g, edit["relation"], anchor[0]["cell"])
        if cell is None:
            raise EditError("no free cell in that direction")
        o["cell"] = [cell[0], cell[1]]
        _apply_rule(o, rule)
        touched = [o]
    elif task == "count_change":
        objs = _targets(g, edit["target"])
        n = int(edit["count"])
        if n < 1 or n == len(objs):
            raise EditError(f"count {n} is not a change from {len(objs)}")
        if n < len(objs):
            drop = {o["id"] for o in sorted(objs, key=lambda o: o["id"])[n:]}
            g["objects"] = [o for o in g["objects"] if o["id"] not in drop]
            touched = [o for o in objs if o["id"] not in drop]
        else:
            proto = objs[0]
            for _ in range(n - len(objs)):
                cell = scene.place(g)
                if cell is None:
                    raise EditError("no free cell for another instance")
                new = {**proto, "id": g["next_id"], "cell": [cell[0], cell[1]]}
                g["next_id"] += 1
                g["objects"].append(new)
            touched = scene.objects_of_kind(g, scene.kind(proto))
    elif task == "text_change":
        if edit.get("old"):
            signs = [o for o in g["objects"] if o["shape"] == scene.SIGN and o["text"] == edit["old"]]
            if len(signs) != 1:
                raise EditError(f"no single sign reading {edit['old']!r}")
            signs[0]["text"] = edit["new"]
            touched = signs
        else:
            cell = scene.place(g)
            if cell is None:
                raise EditError("no free cell for a sign")
            obj = _new_object(g, {"shape": scene.SIGN, "text": edit["new"]}, cell, None)
            g["objects"].append(obj)
            touched = [obj]
        if any(o["text"] == edit["new"] for o in g["objects"] if o not in touched):
            raise EditError(f"another sign already reads {edit['new']!r}")
    elif task == "background_change":
        if edit["background"] == g["background"]:
            raise EditError("the background is already " + edit["background"])
        g["background"] = edit["background"]
    else:
        raise EditError(f"unknown task {task!r}")
    _check_unique(g, touched)
    return g, [o["id"] for o in touched]
