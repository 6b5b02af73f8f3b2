"""Judge validation: how often does a judge's verdict agree with the synthetic suite's exact truth?

:func:`judge_check` builds, for every session and turn of a ``synth`` suite, outputs whose correct
verdicts are known: the probe editors (oracle, synth-context, synth-lastturn, and synth-drift on
turns where its damage is still within the scene tolerances) and deliberately wrong edits of the
ground truth (``wrong_color``, ``wrong_object``: another object altered and the edit not done,
``right_edit_wrong_object``, ``rule_broken`` (cm), ``background_altered``, ``nothing_done``). Each
case's truth comes from the exact scene graphs the case rendered, scored with the same rules as the
scene judge (:func:`micebench.synth.verdict.score_turn`) but without any perception. The judge then
scores the rendered images through ``create_judge(...).score`` in batches.

A judge's metric counts as "pass" when its score is >= the metric's threshold (default 0.5; 0..1
metrics). ``metric_map`` maps IF / CC / GA to the judge's metric names (default: ``if``, ``cc``,
``ga`` where the judge has them); unmapped truths are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from micebench.spec import JudgeRequest, Session
from micebench.synth import probes, scene, verdict
from micebench.synth.edits import EditError, apply_edit
from micebench.synth.noise import NOISES

ERROR_KINDS = ("wrong_color", "wrong_object", "right_edit_wrong_object", "rule_broken", "background_altered",
               "nothing_done")
PROBES = ("oracle", "synth-context", "synth-lastturn", "synth-drift")


def _other_color(current: str, avoid: set[str]) -> str:
    return next(c for c in scene.COLORS if c != current and c not in avoid)


def error_graph(kind: str, prev: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | None:
    """The scene a deliberately wrong editor would draw for this turn (None if the error does not apply)."""
    target, edit, rule = meta["target"], meta["edit"], meta.get("rule")
    touched = set(meta.get("touched", []))
    if kind == "nothing_done":
        return prev
    if kind == "background_altered":
        if edit["task"] == "background_change":
            return None
        g = scene.copy_graph(target)
        g["background"] = next(b for b in scene.BACKGROUNDS if b != target["background"])
        return g
    if kind == "wrong_color":
        g = scene.copy_graph(target)
        objs = [o for o in g["objects"] if o["id"] in touched and o["shape"] != scene.SIGN]
        if edit["task"] not in ("color_alter", "subject_add", "subject_replace") or not objs:
            return None
        if not (edit.get("color") or (edit.get("new") or {}).get("color")):
            return None
        used = {o["color"] for o in g["objects"] if o["shape"] == objs[0]["shape"]}
        for o in objs:
            o["color"] = _other_color(o["color"], used)
        return g
    if kind == "rule_broken":
        if not rule or not any(o["id"] in touched and o["shape"] != scene.SIGN for o in target["objects"]):
            return None
        forgot = "red" if rule.get("color") != "red" else "blue"
        try:
            g, _ = apply_edit(prev, edit, None, default_color=forgot)
        except EditError:
            return None
        return None if g == target else g
    others = [o for o in prev["objects"] if o["id"] in meta.get("unchanged_ids", []) and o["shape"] != scene.SIGN
              and len(scene.objects_of_kind(prev, scene.kind(o))) == 1]
    if not others:
        return None
    victim = others[0]
    if kind == "wrong_object":
        g = scene.copy_graph(prev)
        used = {o["color"] for o in g["objects"] if o["shape"] == victim["shape"]}
        for o in g["objects"]:
            if o["id"] == victim["id"]:
                o["color"] = _other_color(o["color"], used)
        return g
    if kind == "right_edit_wrong_object":
        if edit.get("target") is None or edit["task"] == "text_change":
            return None
        for v in others:
            if edit.get("anchor") is not None and list(scene.kind(v)) == list(edit["anchor"]):
                continue
            try:
                g, _ = apply_edit(prev, {**edit, "target": list(scene.kind(v))}, rule)
            except EditError:
                continue
            return g
        return None
    raise ValueError(f"unknown error kind {kind!r}")


def build_cases(sessions: tuple[Session, ...] | list[Session]) -> list[dict[str, Any]]:
    """Every (session, turn, case) with output images and truth; images are rendered lazily."""
    cases: list[dict[str, Any]] = []
    for s in sessions:
        source = s.metadata["source"]
        metas = [t.metadata for t in s.turns]
        targets = [m["target"] for m in metas]
        instr = [t.instruction for t in s.turns]
        trajectories: dict[str, list[Any]] = {"oracle": targets}
        trajectories["synth-context"] = probes.replay(source, instr, True)[0]
        trajectories["synth-lastturn"] = probes.replay(source, instr, False)[0]
        for name, graphs in trajectories.items():
            for t in range(len(s.turns)):
                cases.append({"session": s, "turn": t, "case": name, "graphs": graphs[: t + 1]})
        # synth-drift: only turn 1, where one turn of damage is inside the documented tolerance
        cases.append({"session": s, "turn": 0, "case": "synth-drift", "graphs": trajectories["synth-context"][:1],
                      "drift": True})
        for t in range(len(s.turns)):
            prev = targets[t - 1] if t else source
            for kind in ERROR_KINDS:
                g = error_graph(kind, prev, metas[t])
                if g is not None:
                    cases.append({"session": s, "turn": t, "case": kind, "graphs": targets[:t] + [g]})
    for c in cases:
        s, t = c["session"], c["turn"]
        obs = [verdict.observe_graph(g) for g in c["graphs"]]
        truth = verdict.score_turn(s.metadata["source"], [x.metadata for x in s.turns[: t + 1]],
                                   s.turns[t].bg_consistency, verdict.observe_graph(s.metadata["source"]), obs)
        c["truth"] = {m: (None if v is None else v >= 0.5) for m, (v, _) in truth.items()}
    return cases


def _images(case: dict[str, Any], source_img: Any) -> list[Any]:
    imgs = [scene.render(g) for g in case["graphs"]]
    if case.get("drift"):
        cfg = probes.SynthDriftEditor.Config()
        imgs[-1] = probes.degrade(imgs[-1], cfg.blur, cfg.tint)
    return imgs


def judge_check(judge_name: str, judge_options: dict[str, Any] | None = None,
                suite_options: dict[str, Any] | None = None, metric_map: dict[str, str] | None = None,
                thresholds: dict[str, float] | None = None, batch_size: int = 32,
                progress: Callable[[int], None] | None = None, judge: Any = None, noise: str = "none",
                by: str = "task_type") -> Any:
    """Run the judge on every case; return the agreement table (a pandas DataFrame).

    ``noise`` (one of :data:`micebench.synth.noise.NOISES`) is applied to every output image: the
    truth does not change, since the noises are within the scene judge's documented tolerances.

    Rows: one per (metric, ``by``) plus ``by`` = "all", where ``by`` is task_type, case (probe or
    error kind), turn or subset; columns: n, agree, accuracy, false_pass,
    false_pass_rate (judge passed what truly fails, over true fails), false_fail, false_fail_rate (over
    true passes), unscored, not_applicable. ``progress(k)`` is called after each batch of k cases.
    """
    import pandas as pd

    from micebench.images import load_image
    from micebench.judges.base import create_judge
    from micebench.synth.suite import SynthSuite

    suite = SynthSuite(SynthSuite.Config(**(suite_options or {})))
    data = suite.load()
    judge = judge or create_judge(judge_name, judge_options or {})
    metric_map = dict(metric_map or {m: m for m in ("if", "cc", "ga") if m in judge.metric_names})
    missing = [v for v in metric_map.values() if v not in judge.metric_names]
    if missing or not metric_map:
        raise ValueError(f"judge {judge_name!r} has metrics {', '.join(judge.metric_names)}; map if/cc/ga to them "
                         f"(e.g. cc=ssim_src); not found: {', '.join(missing) or 'no if/cc/ga'}")
    thresholds = thresholds or {}
    if noise not in NOISES:
        raise ValueError(f"noise {noise!r}: expected one of {', '.join(NOISES)}")
    cases = build_cases(data.sessions)
    rows = []
    sources: dict[str, Any] = {}
    for i in range(0, len(cases), batch_size):
        chunk = cases[i : i + batch_size]
        reqs = []
        for c in chunk:
            s = c["session"]
            if s.id not in sources:
                sources[s.id] = load_image(s.source_image)
            reqs.append(JudgeRequest(session=s, turn_index=c["turn"], source_image=sources[s.id],
                                     outputs=tuple(NOISES[noise](im) for im in _images(c, sources[s.id]))))
        for c, js in zip(chunk, judge.score(reqs), strict=True):
            judged = {j.metric: j for j in js}
            for truth_name, jm in metric_map.items():
                truth = c["truth"].get(truth_name)
                j = judged.get(jm)
                status = "missing" if j is None else j.status.value
                verdict_pass = None
                if j is not None and j.score is not None:
                    verdict_pass = j.score >= thresholds.get(truth_name, thresholds.get(jm, 0.5))
                rows.append({"metric": truth_name, "task_type": c["session"].turns[c["turn"]].task_type,
                             "case": c["case"], "subset": c["session"].subset, "turn": c["turn"] + 1,
                             "truth": truth, "status": status, "judge_pass": verdict_pass})
        if progress:
            progress(len(chunk))
    if by not in ("task_type", "case", "turn", "subset"):
        raise ValueError(f"by={by!r}: expected task_type, case, turn or subset")
    df = pd.DataFrame(rows)
    df["turn"] = df["turn"].astype(str)
    return summarise(df, by)


def summarise(df: Any, by: str = "task_type") -> Any:
    """Agreement table from per-case rows (columns metric, ``by``, truth, status, judge_pass)."""
    import pandas as pd

    out = []
    for (metric, key), g in list(df.groupby(["metric", by])) + [((m, "all"), g) for m, g in df.groupby("metric")]:
        applicable = g[g["truth"].notna()]
        scored = applicable[applicable["judge_pass"].notna()]
        truth = scored["truth"].astype(bool)
        jp = scored["judge_pass"].astype(bool)
        fp, ff = int((jp & ~truth).sum()), int((~jp & truth).sum())
        n_fail, n_pass = int((~truth).sum()), int(truth.sum())
        n = len(scored)
        out.append({"metric": metric, by: key, "n": n, "agree": n - fp - ff,
                    "accuracy": (n - fp - ff) / n if n else float("nan"),
                    "false_pass": fp, "false_pass_rate": fp / n_fail if n_fail else float("nan"),
                    "false_fail": ff, "false_fail_rate": ff / n_pass if n_pass else float("nan"),
                    "unscored": int((applicable["status"] == "unscored").sum()),
                    "not_applicable": int(len(g) - len(applicable) + (applicable["status"] == "not_applicable").sum())})
    return pd.DataFrame(out).sort_values(["metric", by]).reset_index(drop=True)
