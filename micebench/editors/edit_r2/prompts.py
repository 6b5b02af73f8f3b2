"""IC-CoT prompt texts (torch-free, so the manifest can hash them without loading the model).

The wording is this project's own paraphrase of the structure Edit-R2 uses; the exact upstream
strings are not reproduced.
"""

from __future__ import annotations

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
