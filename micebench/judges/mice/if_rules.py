"""Instruction-following (IF) decision rules, one per task type (PROTOCOL.md section 2).

A rule scores ONE vote of one turn: it compares the previous image with the output using only the
parsed ``formatted_instruction``, a detector and a VLM, and returns 0 or 1 with a reason. A VLM
call that fails or an answer that cannot be read raises :class:`VoteFailed`; the judge records
that vote as failed and never turns it into a number. Items that can never pass (an empty target
text) raise :class:`InvalidItem`.

Thresholds, margins and IoU cut-offs are upstream's (module constants below). Boxes are compared
in normalised coordinates, centres unrounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from micebench.judges.backends.detector import Detection, Detector, iou
from micebench.judges.backends.vlm import VLMReply
from micebench.judges.mice.grammar import ParsedInstruction, strip_plural
from micebench.judges.refusals import refusal

DET_THRESHOLD = 0.3  # subject_add, subject_replace, text_change, count_change
REMOVE_THRESHOLD = 0.35
POSITION_THRESHOLD = 0.4
ADD_MARGIN = 0.03
REMOVE_IOU = 0.2  # a box in the output with IoU below this is a different object
DEDUP_IOU = 0.8  # boxes overlapping more than this are one object
LARGE_BOX = 0.98  # subject_remove drops boxes wider AND taller than this


class VoteFailed(Exception):
    """This vote could not be scored: the VLM failed or its answer could not be read."""

    def __init__(self, reason: str, raw: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class InvalidItem(Exception):
    """The item itself can never be scored fairly (e.g. an empty target text)."""


@dataclass(frozen=True)
class VoteResult:
    score: float
    reason: str
    raw: str = ""


_LEADING = re.compile(r"^[\s\W_]*(yes|no)\b", re.IGNORECASE)


def read_yes_no(text: str, mode: str = "leading") -> bool:
    """Read a yes/no answer.

    ``leading`` (ours): the first word, after punctuation and markup, must be yes or no, and the
    answer must not be a refusal or a non-answer ("No images were provided", "Yes, I can help",
    see :mod:`micebench.judges.refusals`); anything else raises :class:`VoteFailed`.
    ``substring`` (upstream): yes when "yes" occurs anywhere in the lowercased text (also inside
    "eyes"), otherwise no.
    """
    if mode == "substring":
        return "yes" in text.lower()
    why = refusal(text)
    if why:
        raise VoteFailed(f"not an answer: {why}: {text[:80]!r}", text)
    m = _LEADING.match(text)
    if not m:
        raise VoteFailed(f"answer does not start with yes or no: {text[:80]!r}", text)
    return m.group(1).lower() == "yes"


@dataclass
class RuleContext:
    """What a rule may use for one vote: the two images, a detector, and a VLM asker.

    ``ask(images, template, **fields)`` renders a prompt template and returns the vote's reply
    (it raises :class:`VoteFailed` when the VLM call fails).
    """

    previous: Any
    output: Any
    detector: Detector
    ask: Callable[..., VLMReply]
    yes_mode: str = "leading"

    def detect(self, image: Any, phrase: str, threshold: float, *, top: bool = False, drop_large: bool = False):
        found: list[Detection] = list(self.detector.detect(image, [phrase], threshold))
        found.sort(key=lambda d: -d.score)
        if drop_large:
            found = [d for d in found if not (_w(d) > LARGE_BOX and _h(d) > LARGE_BOX)]
        return found[:1] if top else found

    def yes(self, images: list[Any], template: str, **fields: Any) -> tuple[bool, str]:
        reply = self.ask(images, template, **fields)
        return read_yes_no(reply.text, self.yes_mode), reply.text


def _w(d: Detection) -> float:
    return abs(d.box[2] - d.box[0])


def _h(d: Detection) -> float:
    return abs(d.box[3] - d.box[1])


def dedup_count(boxes: list[Detection], threshold: float = DEDUP_IOU) -> int:
    """Number of objects after merging boxes whose IoU exceeds ``threshold`` (greedy, best box first)."""
    kept: list[Detection] = []
    for d in boxes:
        if all(iou(d.box, k.box) <= threshold for k in kept):
            kept.append(d)
    return len(kept)


def _vr(ok: bool, reason: str, raw: str = "") -> VoteResult:
    return VoteResult(score=1.0 if ok else 0.0, reason=reason, raw=raw)


def rule_subject_add(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    obj = p["object"]
    ok, raw = c.yes([c.previous, c.output], "if_add_check", instruction=p.text)
    if not ok:
        return _vr(False, "VLM: the addition was not applied", raw)
    if p.form == "plain":
        found = c.detect(c.output, obj, DET_THRESHOLD)
        return _vr(bool(found), f"{len(found)} box(es) of [{obj}] in the output", raw)
    direction, ref = p["direction"], p["reference"]
    refs = c.detect(c.previous, ref, DET_THRESHOLD)
    targets = c.detect(c.output, obj, DET_THRESHOLD)
    if not refs or not targets:
        return _vr(False, f"[{ref}] in previous: {len(refs)} box(es); [{obj}] in output: {len(targets)}", raw)
    for r in refs:
        for t in targets:
            dx, dy = t.center[0] - r.center[0], t.center[1] - r.center[1]
            if (
                (direction == "left" and dx < -ADD_MARGIN)
                or (direction == "right" and dx > ADD_MARGIN)
                or (direction == "above" and dy < -ADD_MARGIN)
                or (direction == "below" and dy > ADD_MARGIN)
            ):
                return _vr(True, f"[{obj}] is {direction} of [{ref}] (dx={dx:.3f}, dy={dy:.3f})", raw)
    return _vr(False, f"no [{obj}] box lies {direction} of a [{ref}] box by more than {ADD_MARGIN}", raw)


def rule_subject_remove(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    obj = p["object"]
    src = c.detect(c.previous, obj, REMOVE_THRESHOLD, top=True, drop_large=True)
    if not src:
        return _vr(False, f"[{obj}] not found in the previous image")
    out = c.detect(c.output, obj, REMOVE_THRESHOLD, top=True, drop_large=True)
    if not out:
        return _vr(True, f"[{obj}] no longer detected")
    overlap = iou(src[0].box, out[0].box)
    if overlap < REMOVE_IOU:
        return _vr(True, f"[{obj}] detected elsewhere (IoU {overlap:.3f} < {REMOVE_IOU})")
    return _vr(False, f"[{obj}] still in place (IoU {overlap:.3f} >= {REMOVE_IOU})")


def rule_subject_replace(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    ok, raw = c.yes([c.previous, c.output], "if_replace_check", instruction=p.text)
    if not ok:
        return _vr(False, "VLM: the replacement was not applied", raw)
    old, new = strip_plural(p["object"]), strip_plural(p["new_object"])
    src = c.detect(c.previous, old, DET_THRESHOLD)
    out = c.detect(c.output, new, DET_THRESHOLD)
    if not src or not out:
        return _vr(False, f"[{old}] in previous: {len(src)} box(es); [{new}] in output: {len(out)}", raw)
    hit = any(iou(a.box, b.box) > 0 for a in src for b in out)
    return _vr(hit, f"[{new}] {'overlaps' if hit else 'does not overlap'} where [{old}] was", raw)


def rule_color_alter(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    ok, raw = c.yes([c.previous, c.output], "if_color", object=p["object"], color=p["color"])
    return _vr(ok, f"VLM: [{p['object']}] is {'' if ok else 'not '}{p['color']}", raw)


def rule_material_alter(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    ok, raw = c.yes([c.previous, c.output], "if_material", object=p["object"], material=p["material"])
    return _vr(ok, f"VLM: [{p['object']}] is {'' if ok else 'not '}made of {p['material']}", raw)


def rule_text_change(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    new_text = p["new_text"]
    if not new_text:
        raise InvalidItem("invalid item: the target text is empty ('[]'), so no output can pass")
    if p.form == "replace":
        obj = p["object"]
        if not c.detect(c.previous, obj, DET_THRESHOLD, top=True):
            return _vr(False, f"[{obj}] not found in the previous image")
    reply = c.ask([c.output], "if_text_read")
    if new_text.lower() in reply.text.strip().lower():
        return _vr(True, f"the output reads {new_text!r}", reply.text)
    if c.yes_mode != "substring" and refusal(reply.text):  # a refusal is not a transcription without the text
        raise VoteFailed(f"not a transcription: {refusal(reply.text)}: {reply.text[:80]!r}", reply.text)
    if reply.truncated:
        raise VoteFailed(f"transcription was cut off at the token limit before {new_text!r} appeared", reply.text)
    return _vr(False, f"{new_text!r} not in the transcribed text", reply.text)


def rule_position_change(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    obj, direction, ref = p["object"], p["direction"], p["reference"]
    boxes = {
        (img, name): c.detect(image, name, POSITION_THRESHOLD)
        for img, image in (("previous", c.previous), ("output", c.output))
        for name in (ref, obj)
    }
    for name in (ref, obj):
        before, after = dedup_count(boxes["previous", name]), dedup_count(boxes["output", name])
        if before != after:
            return _vr(False, f"count of [{name}] changed from {before} to {after}")
    t, r = boxes["output", obj], boxes["output", ref]
    if not t or not r:
        return _vr(False, f"[{obj}] or [{ref}] not detected in the output")
    (tx, ty), (rx, ry) = t[0].center, r[0].center
    ok = {"left": tx < rx, "right": tx > rx, "above": ty < ry, "below": ty > ry}[direction]
    return _vr(ok, f"[{obj}] centre ({tx:.3f}, {ty:.3f}) vs [{ref}] ({rx:.3f}, {ry:.3f}): {direction} is {ok}")


def rule_count_change(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    obj, want = p["object"], int(p["count"])
    if not c.detect(c.previous, obj, DET_THRESHOLD, top=True):
        return _vr(False, f"[{obj}] not found in the previous image")
    got = dedup_count(c.detect(c.output, obj, DET_THRESHOLD))
    return _vr(got == want, f"{got} [{obj}] in the output after de-duplication; asked for {want}")


def rule_background_change(p: ParsedInstruction, c: RuleContext) -> VoteResult:
    ok, raw = c.yes([c.output], "if_background", background=p["background"])
    return _vr(ok, f"VLM: background {'shows' if ok else 'does not show'} {p['background']}", raw)


RULES: dict[str, Callable[[ParsedInstruction, RuleContext], VoteResult]] = {
    "subject_add": rule_subject_add,
    "subject_remove": rule_subject_remove,
    "subject_replace": rule_subject_replace,
    "color_alter": rule_color_alter,
    "material_alter": rule_material_alter,
    "text_change": rule_text_change,
    "position_change": rule_position_change,
    "count_change": rule_count_change,
    "background_change": rule_background_change,
}

#: Task types whose rule asks the VLM (their votes can differ); the others are deterministic.
USES_VLM = frozenset(
    {"subject_add", "subject_replace", "color_alter", "material_alter", "text_change", "background_change"}
)


def check_item(p: ParsedInstruction) -> None:
    """Raise :class:`InvalidItem` for items no output can pass, before any model is asked."""
    if p.task_type == "text_change" and not p["new_text"]:
        raise InvalidItem("invalid item: the target text is empty ('[]'), so no output can pass")
