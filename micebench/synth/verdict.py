"""Scoring rules of the scene judge, on *observed* scenes (parsed from pixels, or taken from a graph).

An observed scene is ``{"background": name | None, "objects": [{"cell", "shape", "color", "material",
"text", "mean"?}], "cell_means"?: {"r,c": [r, g, b]}}``. The judge feeds it what it read from pixels;
judge validation feeds it the exact graph an editor rendered (no colour means: fidelity 1), so both
apply the same decision rules and the comparison isolates perception.

IF follows the formatted instruction only (a rule-set attribute is not checked, as in MICE); GA
checks, for every round so far, that the round's instruction was followed and that the kinds it
touched (with the rule applied) and every earlier edit are present in the right numbers; CC is the
worst-preserved of the unchanged source objects and (where ``bg_consistency``) the background.
"""

from __future__ import annotations

from typing import Any

from micebench.synth import scene

FIDELITY_TOL = 10.0  # mean colour error (per channel, 0..255) that still counts as fully preserved
FIDELITY_ZERO = 50.0  # error at which a preserved element's fidelity reaches 0


def observe_graph(graph: dict[str, Any]) -> dict[str, Any]:
    return {"background": graph["background"], "objects": [dict(o) for o in graph["objects"]]}


def _match(o: dict[str, Any], shape: str | None = None, color: str | None = None, material: str | None = None,
           text: str | None = None) -> bool:
    return ((shape is None or o["shape"] == shape) and (color is None or o["color"] == color)
            and (material is None or o["material"] == material) and (text is None or o.get("text", "") == text))


def _count(objs: list[dict[str, Any]], k: list[str] | tuple[str, ...]) -> int:
    return sum(1 for o in objs if _match(o, k[0], k[1], k[2]))


def _at(objs: list[dict[str, Any]], cell: list[int]) -> dict[str, Any] | None:
    return next((o for o in objs if list(o["cell"]) == list(cell)), None)


def if_pass(edit: dict[str, Any], prev: dict[str, Any], target: dict[str, Any], out: dict[str, Any],
            rule: dict[str, Any] | None, prev_obs: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Was the turn's instruction followed? ``prev``/``target`` are ground-truth graphs, ``out`` the
    observed output and ``prev_obs`` the observed image the turn edited. As in MICE, an edit of an
    object that is not in the edited image fails (an editor that did nothing cannot pass later turns)."""
    objs = out["objects"]
    task = edit["task"]
    rule = rule or {}
    if prev_obs is not None:
        pobjs = prev_obs["objects"]
        if edit.get("target") is not None and not any(_match(o, *edit["target"]) for o in pobjs):
            return False, f"no {scene.kind_name(*edit['target'])} in the image being edited"
        if task == "text_change" and edit.get("old") and not any(o.get("text") == edit["old"] for o in pobjs):
            return False, f"no sign reads {edit['old']!r} in the image being edited"
        if task == "subject_add":
            prev = {"objects": pobjs}
    if task == "subject_add":
        spec = edit["new"]
        want = {"shape": spec["shape"], "color": spec.get("color"), "material": spec.get("material")}
        cands = [o for o in objs if _match(o, **want)]
        before = sum(1 for o in prev["objects"] if _match(o, **want))
        if len(cands) <= before:
            return False, f"no new {spec['shape']} matching the instruction"
        if edit.get("at_cell") is not None:
            ok = any(list(o["cell"]) == list(edit["at_cell"]) for o in cands)
            return ok, "" if ok else "the new object is not at the referred place"
        if edit.get("relation"):
            anchors = [o for o in objs if _match(o, *edit["anchor"])]
            if len(anchors) != 1:
                return False, "the anchor object is missing"
            ok = any(scene.relation_holds(o["cell"], anchors[0]["cell"], edit["relation"]) for o in cands)
            return ok, "" if ok else f"the new object is not {edit['relation']} of the anchor"
        return True, ""
    if task == "subject_remove":
        cells = [o["cell"] for o in prev["objects"] if _match(o, *edit["target"])]
        left = [c for c in cells if (o := _at(objs, c)) is not None and _match(o, *edit["target"])]
        return not left, "" if not left else "the object is still there"
    if task == "subject_replace":
        old = next(o for o in prev["objects"] if _match(o, *edit["target"]))
        o = _at(objs, old["cell"])
        spec = edit["new"]
        ok = o is not None and _match(o, spec["shape"], spec.get("color"), spec.get("material"))
        return ok, "" if ok else "the replacement is not where the old object was"
    if task in ("color_alter", "material_alter"):
        key = "color" if task == "color_alter" else "material"
        cells = [o["cell"] for o in prev["objects"] if _match(o, *edit["target"])]
        for c in cells:
            o = _at(objs, c)
            if o is None or o["shape"] != edit["target"][0] or o[key] != edit[key]:
                return False, f"the object at {c} is not {edit[key]}"
        return True, ""
    if task == "text_change":
        if not any(o["shape"] == scene.SIGN and o.get("text") == edit["new"] for o in objs):
            return False, f"no sign reads {edit['new']!r}"
        if edit.get("old") and any(o["shape"] == scene.SIGN and o.get("text") == edit["old"] for o in objs):
            return False, f"a sign still reads {edit['old']!r}"
        return True, ""
    if task == "position_change":
        moved_ids = {o["id"] for o in prev["objects"] if _match(o, *edit["target"])}  # moving keeps the id
        moved = next(o for o in target["objects"] if o["id"] in moved_ids)
        cands = [o for o in objs if _match(o, moved["shape"], None if rule.get("color") else moved["color"],
                                           None if rule.get("material") else moved["material"])]
        anchors = [o for o in objs if _match(o, *edit["anchor"])]
        if not cands or len(anchors) != 1:
            return False, "the moved object or its anchor is missing"
        ok = any(scene.relation_holds(o["cell"], anchors[0]["cell"], edit["relation"]) for o in cands)
        return ok, "" if ok else f"the object is not {edit['relation']} of the anchor"
    if task == "count_change":
        n = _count(objs, edit["target"])
        return n == int(edit["count"]), "" if n == int(edit["count"]) else f"counted {n}, wanted {edit['count']}"
    if task == "background_change":
        ok = out["background"] == edit["background"]
        return ok, "" if ok else f"background is {out['background']}, wanted {edit['background']}"
    raise ValueError(f"unknown task {task!r}")


def persist_pass(meta: dict[str, Any], out: dict[str, Any]) -> tuple[bool, str]:
    """Do the kinds every round so far touched (rule applied) appear in the target's numbers?"""
    target = meta["target"]
    for k in meta.get("ga_kinds", []):
        want, got = _count(target["objects"], k), _count(out["objects"], k)
        if want != got:
            return False, f"{scene.kind_name(*k, count=2)}: {got} present, {want} expected"
    for o in target["objects"]:
        if o["shape"] == scene.SIGN and o["id"] in meta.get("touched", []):
            if not any(p["shape"] == scene.SIGN and p.get("text") == o["text"] for p in out["objects"]):
                return False, f"no sign reads {o['text']!r}"
    if meta.get("bg_locked") and out["background"] != target["background"]:
        return False, f"background is {out['background']}, an earlier turn set {target['background']}"
    return True, ""


def fidelity(err: float) -> float:
    return float(min(1.0, max(0.0, 1 - (err - FIDELITY_TOL) / (FIDELITY_ZERO - FIDELITY_TOL))))


def _err(a: list[float] | None, b: list[float] | None) -> float:
    if a is None or b is None:
        return 0.0
    return sum(abs(x - y) for x, y in zip(a, b, strict=False)) / 3


def cc_score(source: dict[str, Any], src_obs: dict[str, Any], out: dict[str, Any], target: dict[str, Any],
             unchanged_ids: list[int], bg_consistency: bool) -> tuple[float | None, str]:
    """Content consistency against the source, or (None, why) when nothing applies."""
    terms: list[tuple[float, str]] = []
    for o in source["objects"]:
        if o["id"] not in unchanged_ids:
            continue
        got = _at(out["objects"], o["cell"])
        ref = _at(src_obs["objects"], o["cell"])
        if got is None or not _match(got, o["shape"], o["color"], o["material"], o.get("text", "")):
            terms.append((0.0, f"{scene.obj_name(o)} at {o['cell']} changed or missing"))
        else:
            terms.append((fidelity(_err(got.get("mean"), ref.get("mean") if ref else None)), scene.obj_name(o)))
    if bg_consistency:
        if out["background"] != source["background"]:
            terms.append((0.0, f"background became {out['background']}"))
        else:
            used = {tuple(o["cell"]) for g in (source, target) for o in g["objects"]}
            clutter = [o for o in out["objects"] if tuple(o["cell"]) not in used]
            if clutter:
                terms.append((0.0, f"unexpected object in the background at {clutter[0]['cell']}"))
            empty = [f"{r},{c}" for (r, c) in scene.cells(source) if (r, c) not in used]
            errs = [_err(out.get("cell_means", {}).get(k), src_obs.get("cell_means", {}).get(k)) for k in empty]
            terms.append((fidelity(sum(errs) / len(errs)) if errs else 1.0, "background"))
    if not terms:
        return None, "no unchanged objects and no background term"
    worst = min(terms, key=lambda t: t[0])
    return worst[0], ("" if worst[0] >= 1 else f"worst: {worst[1]}")


def score_turn(source: dict[str, Any], metas: list[dict[str, Any]], bg_consistency: bool, src_obs: dict[str, Any],
               outs: list[dict[str, Any]]) -> dict[str, tuple[float | None, str]]:
    """IF, CC and GA of the last turn in ``metas`` (the turns' ground truth, in order), given the
    observed source and observed outputs of every turn so far. A None score means not applicable."""
    t = len(metas) - 1
    meta = metas[t]
    prev_graph = metas[t - 1]["target"] if t else source
    ok, why = if_pass(meta["edit"], prev_graph, meta["target"], outs[t], meta.get("rule"),
                      outs[t - 1] if t else src_obs)
    res: dict[str, tuple[float | None, str]] = {"if": (1.0 if ok else 0.0, why)}
    res["cc"] = cc_score(source, src_obs, outs[t], meta["target"], meta.get("unchanged_ids", []), bg_consistency)
    ga: tuple[float | None, str] | None = None
    for k in range(t + 1):
        prev_k = metas[k - 1]["target"] if k else source
        ok_if, why_if = if_pass(metas[k]["edit"], prev_k, metas[k]["target"], outs[k], metas[k].get("rule"),
                                outs[k - 1] if k else src_obs)
        ok_p, why_p = persist_pass(metas[k], outs[k])
        if not (ok_if and ok_p):
            ga = (0.0, f"round {k + 1}: {why_if or why_p}")
            break
    if ga is None:
        ok_p, why_p = persist_pass(meta, outs[t])
        ga = (1.0 if ok_p else 0.0, why_p)
    res["ga"] = ga
    return res
