"""Instruction following as the Edit-R2 reward server computes it (``protocol=upstream``).

Reproduced on purpose, with the upstream file and line of each rule in docs/judges.md:

- images travel as JPEG quality 75 from client to server and again from server to the detector
  and the VLM (:func:`jpeg_round_trip`, applied twice);
- the formatted instruction is parsed with non-empty brackets only; no parse gives 0 (this is
  how the seven ``'[]'`` text items score 0);
- boxes keep the detector's query order; "one box" means the first box with the highest score,
  after large boxes are dropped when asked; centres are whole pixels of the detector's image;
- a VLM answer is lowercased and stripped, and "yes" anywhere in it is a yes; a failed VLM call
  reads as "no"; a failed detector call finds nothing; any other error in a rule gives 0.

Every substitution is named in the vote's reason (``upstream: ...``), so a 0 that came from a
failure can be told apart from a 0 the rule gave.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from micebench.judges.backends.detector import Detection, iou

DET_THRESHOLD = 0.3
REMOVE_THRESHOLD = 0.35
POSITION_THRESHOLD = 0.4
REMAIN_THRESHOLD = 0.25
ADD_MARGIN = 0.03
JPEG_QUALITY = 75  # PIL's default, which the authors' client and server use

_B = r"\[([^\]]+)\]"  # a bracket with at least one character, as upstream's patterns
_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    "subject_replace": [re.compile(rf"Replace {_B} with {_B}")],
    "subject_remove": [re.compile(rf"Remove {_B}")],
    "material_alter": [re.compile(rf"Change the material of {_B} to {_B}")],
    "color_alter": [re.compile(rf"Change the color of {_B} to {_B}")],
    "subject_add": [re.compile(rf"Add {_B} on the {_B} of {_B}"), re.compile(rf"Add {_B}")],
    "text_change": [re.compile(rf"Replace the text '{_B}' on {_B} with '{_B}'"),
                    re.compile(rf"Add text '{_B}' on the image")],  # fmt: skip
    "position_change": [re.compile(rf"Change the position of {_B} to {_B} of {_B}")],
    "count_change": [re.compile(rf"Change the count of {_B} to {_B}")],
    "background_change": [re.compile(r"Change the background to ([^,]+), remain the (.+) unchanged"),
                          re.compile(rf"Change the background to {_B}")],  # fmt: skip
}


def parse_upstream(task_type: str, formatted: str | None) -> list[str] | None:
    """The bracketed fields as upstream extracts them (unstripped), or None when no pattern matches."""
    for k, pattern in enumerate(_PATTERNS.get(task_type, [])):
        m = pattern.search(formatted or "")
        if m:
            if task_type == "background_change" and k == 0:
                return [m.group(1), *m.group(2).split(",")]
            return list(m.groups())
    return None


def jpeg_round_trip(image: Any, quality: int = JPEG_QUALITY) -> Any:
    """The image as a receiver sees it after a JPEG encode (``quality``) and decode, in RGB."""
    from PIL import Image

    from micebench.images import as_rgb_image

    buf = io.BytesIO()
    as_rgb_image(image, "JPEG input").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def count_objects(boxes: list[tuple[float, ...]], threshold: float = 0.8) -> int:
    """Objects left after upstream's de-duplication: sweep the list in order, dropping any later box whose
    IoU with an earlier kept one exceeds ``threshold``, and repeat until a sweep drops nothing."""
    kept = list(boxes)
    while len(kept) > 1:
        dropped = False
        i = 0
        while i < len(kept):
            j = i + 1
            while j < len(kept):
                if iou(kept[i], kept[j]) > threshold:
                    kept.pop(j)
                    dropped = True
                else:
                    j += 1
            i += 1
        if not dropped:
            break
    return len(kept)


@dataclass(frozen=True)
class Found:
    """One detector answer as upstream's server returns it: boxes in query order, integer pixel centres."""

    boxes: list[tuple[float, float, float, float]]
    centers: list[tuple[int, int]]
    note: str = ""  # why the call found nothing because it failed, if it did


def _query_order(found: list[Detection]) -> list[Detection]:
    return sorted(found, key=lambda d: d.index)


@dataclass
class UpstreamContext:
    """What one upstream IF vote sees: the images after both JPEG hops, a detector, a VLM asker."""

    previous: Any
    output: Any
    detector: Any
    ask: Callable[[list[Any], str], str]  # returns the raw answer; raises on a failed call
    texts: Any  # micebench.upstream.JudgeTexts
    notes: list[str] = field(default_factory=list)

    def detect(self, image: Any, phrase: str, threshold: float = DET_THRESHOLD, *, return_all: bool = False,
               delete_large: bool = False) -> Found:  # fmt: skip
        try:
            found = _query_order(list(self.detector.detect(image, [phrase], threshold)))
        except Exception as e:  # upstream: a failed detector call returns no boxes
            self.notes.append(f"detector failed ({type(e).__name__}: {e}) -> nothing found")
            return Found([], [], note="failed")
        if delete_large:
            found = [d for d in found if not (abs(d.box[0] - d.box[2]) > 0.98 and abs(d.box[1] - d.box[3]) > 0.98)]
        if found and not return_all:
            best = max(d.score for d in found)
            found = [next(d for d in found if d.score == best)]
        w, h = image.size
        centers = [(int((d.box[0] + d.box[2]) / 2 * w), int((d.box[1] + d.box[3]) / 2 * h)) for d in found]
        return Found([d.box for d in found], centers)

    def vlm(self, images: list[Any], prompt: str) -> str:
        try:
            return self.ask(images, prompt).strip().lower()
        except Exception as e:  # upstream: a failed VLM call answers "no"
            self.notes.append(f"VLM call failed ({e}) -> 'no'")
            return "no"


def _r(score: int, reason: str, raw: str = "") -> tuple[float, str, str]:
    return float(score), reason, raw


def _add(p: list[str], c: UpstreamContext, text: str):
    resp = c.vlm([c.previous, c.output], c.texts.add_check(text))
    if "yes" not in resp:
        return _r(0, "VLM pre-check: no", resp)
    if len(p) == 1:
        n = len(c.detect(c.output, p[0], return_all=True).boxes)
        return _r(int(n > 0), f"{n} box(es) of [{p[0]}] in the output", resp)
    obj, position, ref = p
    refs = c.detect(c.previous, ref, return_all=True)
    targets = c.detect(c.output, obj, return_all=True)
    if not refs.boxes or not targets.boxes:
        return _r(0, f"[{ref}] in previous: {len(refs.boxes)}; [{obj}] in output: {len(targets.boxes)}", resp)
    (pw, ph), (ow, oh) = c.previous.size, c.output.size
    for rc in refs.centers:
        for tc in targets.centers:
            dx, dy = tc[0] / ow - rc[0] / pw, tc[1] / oh - rc[1] / ph
            if ((position == "left" and dx < -ADD_MARGIN) or (position == "right" and dx > ADD_MARGIN)
                    or (position == "above" and dy < -ADD_MARGIN) or (position == "below" and dy > ADD_MARGIN)):
                return _r(1, f"[{obj}] {position} of [{ref}] (dx={dx:.4f}, dy={dy:.4f})", resp)  # fmt: skip
    return _r(0, f"no [{obj}] {position} of [{ref}] by more than {ADD_MARGIN}", resp)


def _remove(p: list[str], c: UpstreamContext, text: str):
    src = c.detect(c.previous, p[0], REMOVE_THRESHOLD, delete_large=True)
    if not src.boxes:
        return _r(0, f"[{p[0]}] not found in the previous image")
    out = c.detect(c.output, p[0], REMOVE_THRESHOLD, delete_large=True)
    if not out.boxes:
        return _r(1, f"[{p[0]}] not detected in the output")
    overlap = iou(src.boxes[0], out.boxes[0])
    return _r(int(overlap < 0.2), f"IoU of the top boxes {overlap:.4f} (removed if < 0.2)")


def _strip_plural(name: str) -> str:
    return name[:-2] if name.endswith("es") else name[:-1] if name.endswith("s") else name


def _replace(p: list[str], c: UpstreamContext, text: str):
    resp = c.vlm([c.previous, c.output], c.texts.replace_check(text))
    if "yes" not in resp:
        return _r(0, "VLM pre-check: no", resp)
    old, new = _strip_plural(p[0]), _strip_plural(p[1])
    src = c.detect(c.previous, old, return_all=True)
    out = c.detect(c.output, new, return_all=True)
    if not src.boxes or not out.boxes:
        return _r(0, f"[{old}] in previous: {len(src.boxes)}; [{new}] in output: {len(out.boxes)}", resp)
    hit = any(iou(a, b) > 0 for a in src.boxes for b in out.boxes)
    return _r(int(hit), f"[{new}] {'overlaps' if hit else 'does not overlap'} [{old}]", resp)


def _color(p: list[str], c: UpstreamContext, text: str):
    resp = c.vlm([c.previous, c.output], c.texts.color(p[0], p[1]))
    return _r(int("yes" in resp), f"VLM: {'yes' if 'yes' in resp else 'no'}", resp)


def _material(p: list[str], c: UpstreamContext, text: str):
    resp = c.vlm([c.previous, c.output], c.texts.material(p[0], p[1]))
    return _r(int("yes" in resp), f"VLM: {'yes' if 'yes' in resp else 'no'}", resp)


def _text(p: list[str], c: UpstreamContext, text: str):
    if len(p) == 3 and not c.detect(c.previous, p[1]).boxes:
        return _r(0, f"[{p[1]}] not found in the previous image")
    new_text = p[-1]
    resp = c.vlm([c.output], c.texts.text_read())
    ok = new_text.lower() in resp
    return _r(int(ok), f"{new_text!r} {'found' if ok else 'not found'} in the transcription", resp)


def _position(p: list[str], c: UpstreamContext, text: str):
    obj, position, ref = p
    found = {(k, name): c.detect(img, name, POSITION_THRESHOLD, return_all=True)
             for k, img in (("previous", c.previous), ("output", c.output)) for name in (ref, obj)}  # fmt: skip
    for name, what in ((ref, "reference"), (obj, "target")):
        before, after = count_objects(found["previous", name].boxes), count_objects(found["output", name].boxes)
        if before != after:
            return _r(0, f"{what} [{name}] count changed from {before} to {after}")
    t, r = found["output", obj], found["output", ref]
    if not t.boxes or not r.boxes:
        return _r(0, "objects not detected in the output")
    (tx, ty), (rx, ry) = t.centers[0], r.centers[0]
    ok = {"left": tx < rx, "right": tx > rx, "above": ty < ry, "below": ty > ry}.get(position, False)
    return _r(int(ok), f"first [{obj}] centre ({tx}, {ty}) vs first [{ref}] ({rx}, {ry}): {position} is {ok}")


def _count(p: list[str], c: UpstreamContext, text: str):
    obj, want = p
    src = c.detect(c.previous, obj)
    got = count_objects(c.detect(c.output, obj, return_all=True).boxes)
    ok = bool(src.boxes) and got == int(want)
    return _r(int(ok), f"[{obj}] in previous: {len(src.boxes)}; {got} in the output after de-duplication; asked {want}")


def _background(p: list[str], c: UpstreamContext, text: str):
    background, remain = p[0], p[1:]
    for obj in remain:
        found = c.detect(c.output, obj, REMAIN_THRESHOLD)
        if not found.boxes:
            return _r(0, f"remaining object [{obj}] not detected")
        x1, y1, x2, y2 = found.boxes[0]
        if abs(x2 - x1) > 0.9 and abs(y2 - y1) > 0.9:
            return _r(0, f"remaining object [{obj}]: box too large (false positive)")
    resp = c.vlm([c.output], c.texts.background(background))
    return _r(int("yes" in resp), f"VLM: {'yes' if 'yes' in resp else 'no'}", resp)


RULES: dict[str, Callable[[list[str], UpstreamContext, str], tuple[float, str, str]]] = {
    "subject_add": _add, "subject_remove": _remove, "subject_replace": _replace, "color_alter": _color,
    "material_alter": _material, "text_change": _text, "position_change": _position, "count_change": _count,
    "background_change": _background,
}  # fmt: skip


def score_if_upstream(
    task_type: str, formatted: str, parsed: list[str], ctx: UpstreamContext
) -> tuple[float, str, str]:
    """(score, reason, raw answer) of one vote. Never raises: an error inside the rule gives 0, as upstream."""
    try:
        score, reason, raw = RULES[task_type](parsed, ctx, formatted)
    except Exception as e:
        score, reason, raw = 0.0, f"upstream: error in the rule ({type(e).__name__}: {e}) -> 0", ""
    if ctx.notes:
        reason += "; upstream: " + "; ".join(dict.fromkeys(ctx.notes))
    return score, reason, raw
