"""Recognise a VLM's refusals and non-answers, so a judge records them as failed votes, never as scores.

A strict reading of a yes/no answer takes the first word; that alone would count "No images were
provided" as *no* and "Yes, I can help with that" as *yes*. :func:`refusal` looks for what a model
says when it did not look at the images or did not answer the question:

- the images are missing or cannot be seen ("No images were provided", "I cannot see the image",
  "I'm unable to view images") -- anywhere in the answer;
- an offer or an apology instead of an answer ("Yes, I can help with that", "Sure, please upload
  the images", "I'm sorry, but", "As an AI language model") -- at the start of the answer;
- no answer at all: empty or only punctuation, or an echo of the choice ("Yes or no").

Patterns are deliberately narrow: "No, I can't see any red in the image" is an answer about the
image (its object is not the image itself), and stays one.
"""

from __future__ import annotations

import re

_IMAGE = r"(?:images?|pictures?|photos?|photographs?|attachments?|files?|inputs?|visuals?)"
_NEG = r"(?:can ?not|can't|cannot|could ?not|couldn't|unable to|not able to|don't|do not|didn't|did not|won't)"
_SEE = r"(?:see|view|access|open|load|process|analy[sz]e|display|look at|receive|find|perceive|read)"

#: Anywhere in the answer: the model says it has no image, or cannot look at it.
_NO_IMAGE = [
    # "No images were provided", "no image has been attached", "There is no image"
    rf"\bno {_IMAGE}\b(?: \w+){{0,2}} (?:were|was|has been|have been|is|are) (?:provided|attached|uploaded|"
    rf"included|given|shared|received|supplied)",
    # "There is no image." / "there are no images provided" (not "there is no picture frame")
    rf"\bthere (?:is|are|was|were) no {_IMAGE}(?: (?:provided|attached|uploaded|included|shared|given|here|"
    rf"to (?:analy[sz]e|see|view|look at|compare)))?\s*(?:[.,;:!]|$)",
    rf"\b(?:without|missing) (?:the |an |any )?{_IMAGE}\b(?: \w+){{0,3}} (?:i|we) (?:can ?not|cannot|can't)",
    # "I cannot see the image", "I'm unable to view the provided images", "I don't see any image"
    rf"\b{_NEG} {_SEE}(?: (?:the|any|an|a|these|those|this|your|provided|uploaded|attached|given|two|both|"
    rf"referenced|mentioned|actual)){{0,3}} {_IMAGE}\b",
    rf"\b(?:the |your )?{_IMAGE} (?:did not|didn't|does not|doesn't|do not|don't|failed to) "
    rf"(?:come through|load|upload|attach|arrive)",
    rf"\b(?:please|kindly) (?:provide|upload|share|send|attach|include|re-?upload)(?: \w+){{0,2}} {_IMAGE}\b",
]

#: At the start of the answer (first sentence or so): an offer, an apology, a disclaimer.
_OPENING = [
    r"^(?:yes|no|sure|certainly|of course|absolutely|okay|ok)\b[\s,.!:;-]*(?:i|we)(?:'d|'ll|'m| can| could| would|"
    r" will| am| are)(?: be)?(?: (?:happy|glad|able) to)? (?:help|assist|do that|do this|try|check|look|"
    r"take a look|analy[sz]e|compare)\b",
    r"^(?:yes|no|sure|certainly|of course|okay|ok)\b[\s,.!:;-]*(?:please|kindly) ",
    r"^(?:i'm|i am) (?:sorry|afraid)\b",
    r"^(?:sorry|apologies)\b",
    r"^as an ai\b",
    r"^(?:i|we) (?:can ?not|can't|cannot|am unable to|am not able to|won't) (?:help|assist|answer|determine|tell|"
    r"say|comply|provide|make)",
]

_ECHO = re.compile(r"^\W*(?:yes|no)\s*(?:or|/)\s*(?:yes|no)\W*$", re.IGNORECASE)
_NO_IMAGE_RE = [re.compile(p, re.IGNORECASE) for p in _NO_IMAGE]
_OPENING_RE = [re.compile(p, re.IGNORECASE) for p in _OPENING]


def _normalise(text: str) -> str:
    """Lower-case, curly apostrophes straightened, markup and extra spaces removed."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[*_`#>]+", " ", text)
    return " ".join(text.split()).lower()


def refusal(text: str) -> str | None:
    """Why ``text`` is a refusal or a non-answer (a short phrase), or None when it may be an answer."""
    t = _normalise(text)
    if not re.search(r"\w", t):
        return "the answer is empty"
    if _ECHO.match(t):
        return "the answer repeats the choices instead of choosing"
    opening = t[:200]
    for pat in _OPENING_RE:
        if pat.search(opening):
            return "the answer is an offer, an apology or a disclaimer, not a verdict"
    for pat in _NO_IMAGE_RE:
        if pat.search(t):
            return "the model says it has no image or cannot see it"
    return None
