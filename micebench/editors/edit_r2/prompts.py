"""IC-CoT prompt texts (torch-free, so the manifest can hash them without loading the model).

The wording here is this project's own paraphrase of the structure Edit-R2 uses; the authors'
strings are not in this project. :func:`ic_cot_text` picks the authors' text instead, read at run
time from the user's checkout of their repository (:mod:`micebench.upstream`), when one is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

THINK_SYSTEM_PROMPT = (
    "Before you answer, reason about the request step by step, and put that reasoning between "
    "<think> and </think>.\nThen write your answer after the closing tag. "
    "Example: <think> short reasoning here </think> final answer here"
)

TASKS = {
    "cu": (
        "The current instruction may point back with vague words such as it, them, its, their or there. "
        "Using what the images show and the earlier instructions, replace each such word with the concrete "
        "object it most likely refers to."
    ),
    "cm": (
        "Earlier rounds may have set a rule that must keep holding in every later round (for example a colour "
        "or style that has to stay applied). Fold any such lasting rule into the current instruction."
    ),
    "generic": (
        "Rewrite the current instruction so that it can be understood on its own, without the editing history."
    ),
}

IC_COT_MODES = ("cm", "cu", "generic")


def rewrite_request(history: list[str], current: str, mode: str) -> str:
    """The rewrite request: numbered history of ORIGINAL instructions, the current one quoted, the task."""
    if mode not in TASKS:
        raise ValueError(f"unknown IC-CoT mode {mode!r}; expected one of {', '.join(IC_COT_MODES)}")
    lines = ["Editing history:"]
    lines += [f"Round {i}: {p}" for i, p in enumerate(history, start=1)]
    lines += [
        "",
        f'Current instruction: "{current}"',
        "",
        TASKS[mode],
        "Keep your thinking brief (under 100 words). After it, output only the enhanced instruction.",
    ]
    return "\n".join(lines)


def mode_for_subset(subset: str) -> str:
    """'auto' mode: MICE-Bench subset cm -> cm, cu -> cu, anything else -> generic."""
    s = subset.strip().lower()
    return s if s in ("cm", "cu") else "generic"


# ----- which text IC-CoT uses: the authors' (from their checkout) or this paraphrase ------------------

PARAPHRASE_NOTE = (
    "edit-r2 IC-CoT uses micebench's paraphrase of the Edit-R2 prompts, not the authors' text, so its rewrites "
    "(and images) differ from Edit-R2's; give -M upstream_repo=DIR or $MICEBENCH_EDITR2_REPO (a checkout of "
    "github.com/yuxiaooye/Edit-R2 at commit 2dd266f) to use theirs"
)


@dataclass(frozen=True)
class IcCotText:
    """The IC-CoT texts an editor uses: ``source`` is "upstream" (read from the authors' checkout) or
    "paraphrase" (this module's own wording); ``sha256`` names the exact texts."""

    source: str
    system_prompt: str
    build: Callable[[list[str], str, str], str]
    sha256: str

    def question(self, history: list[str], current: str, mode: str) -> str:
        return self.build(list(history), current, mode)


PARAPHRASE = IcCotText(
    source="paraphrase",
    system_prompt=THINK_SYSTEM_PROMPT,
    build=rewrite_request,
    sha256=hashlib.sha256("\x00".join([THINK_SYSTEM_PROMPT, *(TASKS[k] for k in sorted(TASKS))]).encode()).hexdigest(),
)


def ic_cot_text(upstream_repo: str | None) -> IcCotText:
    """The authors' texts when a checkout is given (the option, else $MICEBENCH_EDITR2_REPO), else the paraphrase.
    A checkout that is missing or not at the pinned commit raises :class:`~micebench.errors.SetupError`."""
    from micebench.upstream import ic_cot_texts, resolve_repo

    repo = resolve_repo(upstream_repo)
    if repo is None:
        return PARAPHRASE
    texts = ic_cot_texts(repo)
    return IcCotText(source="upstream", system_prompt=texts.system_prompt, build=texts.question, sha256=texts.hash)
