"""The authors' prompt texts, read at run time from the user's checkout of Edit-R2.

micebench does not ship the Edit-R2 authors' wording. ``protocol=upstream`` of the ``mice`` judge
and the ``edit-r2`` editor's IC-CoT read it from a checkout the user already has (MICE-Bench's
metadata lives in that repository's ``dataset/`` folder): ``upstream_repo=DIR`` or
``$MICEBENCH_EDITR2_REPO``.

How it is read: each source file is parsed with :mod:`ast`, never imported (the authors' modules
import torch, start servers and read globals at import time). Three kinds of items are taken:

- ``constant``: a module-level ``NAME = "..."`` string, read with ``ast.literal_eval``;
- ``expression``: one expression inside a function (an f-string, or the ``"\\n".join(...)`` that
  lists a session's rounds), compiled alone as a ``lambda`` of the names it uses;
- ``function``: one function or method, compiled alone (annotations and decorators dropped).

Compiled code runs in an empty namespace (builtins only). Before anything is compiled, the sha256
of every item (a string's value; an expression's or function's source text) is compared with the
value pinned below for commit :data:`EDIT_R2_COMMIT`; a missing file, a missing item or a
mismatch is a :class:`~micebench.errors.SetupError` naming that commit. The pins are facts about
the authors' files, not their text.
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micebench.errors import SetupError

EDIT_R2_COMMIT = "2dd266f3146635bd23e55974a4a75639c60f223d"
EDIT_R2_URL = "https://github.com/yuxiaooye/Edit-R2"
ENV_VAR = "MICEBENCH_EDITR2_REPO"

SERVER = "rewards/reward_server/edival_reward_server.py"
CLIENT = "flow_grpo/edival_client.py"
INFERENCER = "flow_grpo/bagel/inferencer.py"


@dataclass(frozen=True)
class Item:
    """Where one piece of text lives in the authors' files.

    ``where`` for a constant: ``(NAME,)``. For an expression: the path of enclosing functions,
    then ``"branch:<task type>"`` (the f-string handed to the VLM call in the ``if task_type == ...``
    branch) or
    ``"assign:<name>"`` (the value assigned to ``name``). For a function: the path of enclosing
    classes/functions and the function's own name. ``params``: the names an expression or
    function takes, in call order.
    """

    kind: str
    file: str
    where: tuple[str, ...]
    params: tuple[str, ...] = ()

    def label(self) -> str:
        return f"{self.file}:{'.'.join(self.where)}"


ITEMS: dict[str, Item] = {
    # Instruction following: the reward server's VLM questions.
    "if_add": Item("constant", SERVER, ("VLM_ADD_PROMPT",)),
    "if_replace": Item("constant", SERVER, ("VLM_REPLACE_PROMPT",)),
    "if_color": Item("expression", SERVER, ("evaluate_single", "branch:color_alter"), ("object_name", "new_color")),
    "if_material": Item(
        "expression", SERVER, ("evaluate_single", "branch:material_alter"), ("object_name", "new_material")
    ),
    "if_text": Item("constant", SERVER, ("VLM_TEXT_PROMPT",)),
    "if_background": Item("constant", SERVER, ("VLM_BACKGROUND_PROMPT",)),
    # Global awareness: the client's two prompts and how each lists the rounds.
    "ga_cm": Item("constant", CLIENT, ("MULTITURN_VLM_PROMPT",)),
    "ga_cu": Item("constant", CLIENT, ("MULTITURN_CU_VLM_PROMPT",)),
    "ga_cm_rounds": Item(
        "expression", CLIENT, ("edival_ga_score_client", "_process_single", "assign:instructions_formatted"),
        ("instrs",),
    ),  # fmt: skip
    "ga_cu_rounds": Item(
        "expression", CLIENT, ("edival_cu_score_client", "_process_single", "assign:instructions_formatted"),
        ("instrs", "fmt_instrs"),
    ),  # fmt: skip
    # Edit-R2's IC-CoT: the think-then-answer system text and the rewrite question.
    "ic_cot_system": Item("constant", INFERENCER, ("VLM_THINK_SYSTEM_PROMPT",)),
    "ic_cot_question": Item(
        "function", INFERENCER, ("InterleaveInferencer", "_build_pe_question"),
        ("self", "history_prompts", "current_prompt"),
    ),  # fmt: skip
}

JUDGE_ITEMS = ("if_add", "if_replace", "if_color", "if_material", "if_text", "if_background",
               "ga_cm", "ga_cu", "ga_cm_rounds", "ga_cu_rounds")  # fmt: skip
IC_COT_ITEMS = ("ic_cot_system", "ic_cot_question")

#: sha256 of every item at commit EDIT_R2_COMMIT (a string's UTF-8 value; an expression's or a
#: function's source text). Facts about the authors' files; their text is not in this project.
PINS: dict[str, str] = {
    "if_add": "46567be8c607f3bbe0d5f122a8c328ba69ff49944ae2df944adb56c3f6e117a8",
    "if_replace": "6001940a4f720c1e2864b420c6a3133d52bd6a9194462bafaa0c3ed896f9ee2c",
    "if_color": "517d6b64437c494c48ddee247afe0ff0fdd46ee61149e568eae4b466411356b6",
    "if_material": "2a7ecd25ec48ba79f82b89191a37d04dd4a44fd3e03c09b074ea59761237739c",
    "if_text": "e8d80901a6d42d040223821afa7f0ed17ac9819a3fb23ef8fbc039529bea67f9",
    "if_background": "da7356d9b7ea954d2e4054c2297e438acdbdc7bd2735ae6f38b1518cd6a6796c",
    "ga_cm": "ce4a7e352b765f4933a65fea62ea1e34cda1c93fa4d4caab76cd0f2340b25191",
    "ga_cu": "10b4440fe26c2ae1adbcb7dc1b18aff54d0c3b17a0f7b92f7c810db194a5866c",
    "ga_cm_rounds": "f51016fcbf12df4b1c4184b2ddfeeea972273012d63d20d3bc8c5061671b2de9",
    "ga_cu_rounds": "742f96fde0116dcae3912cca733604bcf796bb9599d80291e4efbac0da053a93",
    "ic_cot_system": "5eff00888fdf6b912c3f9a80711933dd35cdd164d167cba6b2a5889c04d7b565",
    "ic_cot_question": "dc25ec9a5abfd6bb17ba26b454bbd0e2f90b7544c46aba64792a6a38e009ed0c",
}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_repo(option: str | os.PathLike | None) -> Path | None:
    """The checkout to read: the option when given, else ``$MICEBENCH_EDITR2_REPO``, else None."""
    value = option if option not in (None, "") else os.environ.get(ENV_VAR) or None
    return Path(value).expanduser() if value is not None else None


def _wrong_checkout(root: Path, what: str) -> SetupError:
    return SetupError(
        f"upstream_repo {root}: {what}; it must be a checkout of {EDIT_R2_URL} at commit {EDIT_R2_COMMIT} "
        f"(set upstream_repo=DIR or ${ENV_VAR})"
    )


@dataclass
class _Found:
    node: ast.AST
    source: str  # the text that is hashed
    value: Any = None  # a constant's string


class UpstreamCheckout:
    """One checkout of Edit-R2; items are found, checked against ``pins`` and compiled on demand.

    ``pins`` defaults to :data:`PINS` (commit :data:`EDIT_R2_COMMIT`); tests pass the pins of their
    own fixture files.
    """

    def __init__(self, root: str | os.PathLike, pins: dict[str, str] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.pins = dict(PINS if pins is None else pins)
        if not self.root.is_dir():
            raise _wrong_checkout(self.root, "not a directory")
        self._trees: dict[str, tuple[str, ast.Module]] = {}

    # -- finding ---------------------------------------------------------------------------------
    def _tree(self, file: str) -> tuple[str, ast.Module]:
        if file not in self._trees:
            path = self.root / file
            if not path.is_file():
                raise _wrong_checkout(self.root, f"{file} not found")
            try:
                source = path.read_text(encoding="utf-8")
                self._trees[file] = (source, ast.parse(source, filename=str(path)))
            except (OSError, UnicodeDecodeError, SyntaxError) as e:
                raise _wrong_checkout(self.root, f"{file} cannot be read as Python ({type(e).__name__}: {e})") from e
        return self._trees[file]

    def _find(self, key: str) -> _Found:
        item = ITEMS[key]
        source, tree = self._tree(item.file)
        missing = _wrong_checkout(self.root, f"{item.label()} not found in {item.file}")
        if item.kind == "constant":
            for stmt in tree.body:
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                        and stmt.targets[0].id == item.where[0]):  # fmt: skip
                    try:
                        value = ast.literal_eval(stmt.value)
                    except ValueError:
                        value = None
                    if not isinstance(value, str):
                        raise _wrong_checkout(self.root, f"{item.label()} is not a string constant")
                    return _Found(stmt.value, value, value)
            raise missing
        scope: ast.AST = tree
        names = item.where if item.kind == "function" else item.where[:-1]
        for name in names:
            scope = _child_def(scope, name) or _raise(missing)
        if item.kind == "function":
            return _Found(scope, ast.get_source_segment(source, scope) or "")
        selector, _, arg = item.where[-1].partition(":")
        node = _select(scope, selector, arg) or _raise(missing)
        return _Found(node, ast.get_source_segment(source, node) or "")

    def _checked(self, key: str) -> _Found:
        found = self._find(key)
        got, want = sha256_text(found.source), self.pins.get(key, "")
        if got != want:
            item = ITEMS[key]
            why = f"{item.label()} differs from that commit (sha256 {got[:16]}, expected {want[:16] or 'none'})"
            raise _wrong_checkout(self.root, why)
        return found

    # -- public ----------------------------------------------------------------------------------
    def digest(self, keys: tuple[str, ...]) -> str:
        """sha256 over the pins of ``keys``: names the exact texts a judge or editor uses."""
        blob = "\n".join(f"{k}={self.pins.get(k, '')}" for k in sorted(keys))
        return sha256_text(blob)

    def check(self, keys: tuple[str, ...] | None = None) -> None:
        """Verify every item of ``keys`` (default: all) against its pin; raise SetupError on the first problem."""
        for key in keys or tuple(ITEMS):
            self._checked(key)

    def text(self, key: str) -> str:
        """A verified string constant."""
        if ITEMS[key].kind != "constant":
            raise KeyError(f"{key} is a {ITEMS[key].kind}, not a constant")
        return self._checked(key).value

    def callable(self, key: str) -> Callable[..., Any]:
        """A verified expression or function, compiled alone in an empty namespace."""
        item = ITEMS[key]
        found = self._checked(key)
        if item.kind == "expression":
            used = _free_names(found.node)
            if used != set(item.params):
                raise _wrong_checkout(self.root, f"{item.label()} uses names {sorted(used)}, not {list(item.params)}")
            args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in item.params], kwonlyargs=[],
                                 kw_defaults=[], defaults=[])  # fmt: skip
            tree = ast.Expression(body=ast.Lambda(args=args, body=copy.deepcopy(found.node)))
            code = compile(ast.fix_missing_locations(tree), f"<{item.label()}>", "eval")
            return eval(code, {"__builtins__": builtins})  # noqa: S307 - a pinned expression, empty namespace
        if item.kind != "function":
            raise KeyError(f"{key} is a constant; use text()")
        fn = copy.deepcopy(found.node)
        assert isinstance(fn, ast.FunctionDef)
        got = tuple(a.arg for a in fn.args.args)
        if got != item.params:
            raise _wrong_checkout(self.root, f"{item.label()} takes {list(got)}, not {list(item.params)}")
        fn.decorator_list = []
        fn.returns = None
        for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs, fn.args.vararg, fn.args.kwarg):
            if a is not None:
                a.annotation = None
        namespace: dict[str, Any] = {"__builtins__": builtins}
        module = ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[]))
        exec(compile(module, f"<{item.label()}>", "exec"), namespace)  # noqa: S102 - a pinned function
        return namespace[fn.name]

    def pins_found(self) -> dict[str, str]:
        """sha256 of every item as found in this checkout, unverified (to pin a new commit, or in tests)."""
        return {key: sha256_text(self._find(key).source) for key in ITEMS}


def _raise(e: Exception):
    raise e


def _child_def(scope: ast.AST, name: str) -> ast.AST | None:
    """A class or function called ``name`` directly in ``scope``'s body."""
    for node in getattr(scope, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
    return None


def _select(scope: ast.AST, selector: str, arg: str) -> ast.AST | None:
    if selector == "assign":
        for node in ast.walk(scope):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == arg):  # fmt: skip
                return node.value
        return None
    if selector == "branch":
        for node in ast.walk(scope):
            if isinstance(node, ast.If) and _tests_task_type(node.test, arg):
                for stmt in node.body:
                    for sub in ast.walk(stmt):
                        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id.startswith(
                            "call_vlm"
                        ):
                            found = [a for a in sub.args if isinstance(a, ast.JoinedStr)]
                            if found:
                                return found[0]
        return None
    raise ValueError(f"unknown selector {selector!r}")


def _tests_task_type(test: ast.AST, value: str) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "task_type"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == value)  # fmt: skip


def _free_names(node: ast.AST) -> set[str]:
    """Names an expression reads that it does not bind itself (comprehension targets) and that are not builtins."""
    bound: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.comprehension):
            bound |= {n.id for n in ast.walk(sub.target) if isinstance(n, ast.Name)}
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return {n for n in loaded - bound if not hasattr(builtins, n)}


# ----- the bundles the judge and the editor use ---------------------------------------------------


class JudgeTexts:
    """The mice judge's upstream prompts: each method returns exactly the text upstream sends."""

    def __init__(self, checkout: UpstreamCheckout) -> None:
        checkout.check(JUDGE_ITEMS)
        self.hash = checkout.digest(JUDGE_ITEMS)[:16]
        self._t = {k: checkout.text(k) for k in JUDGE_ITEMS if ITEMS[k].kind == "constant"}
        self._f = {k: checkout.callable(k) for k in JUDGE_ITEMS if ITEMS[k].kind != "constant"}

    def add_check(self, formatted_instruction: str) -> str:
        return self._t["if_add"].format(instruction=formatted_instruction)

    def replace_check(self, formatted_instruction: str) -> str:
        return self._t["if_replace"].format(instruction=formatted_instruction)

    def color(self, object_name: str, new_color: str) -> str:
        return self._f["if_color"](object_name, new_color)

    def material(self, object_name: str, new_material: str) -> str:
        return self._f["if_material"](object_name, new_material)

    def text_read(self) -> str:
        return self._t["if_text"]

    def background(self, background: str) -> str:
        return self._t["if_background"].format(background=background)

    def ga(self, variant: str, instructions: list[str], formatted: list[str]) -> str:
        if variant == "cu":
            rounds = self._f["ga_cu_rounds"](instructions, formatted)
            return self._t["ga_cu"].format(instructions_formatted=rounds)
        return self._t["ga_cm"].format(instructions_formatted=self._f["ga_cm_rounds"](instructions))


class IcCotTexts:
    """Edit-R2's IC-CoT system text and rewrite question (its ``.strip()`` of history and prompt included)."""

    def __init__(self, checkout: UpstreamCheckout) -> None:
        checkout.check(IC_COT_ITEMS)
        self.hash = checkout.digest(IC_COT_ITEMS)[:16]
        self.system_prompt = checkout.text("ic_cot_system")
        self._question = checkout.callable("ic_cot_question")

    def question(self, history: list[str], current: str, mode: str) -> str:
        """``mode`` cm / cu pick those questions; anything else the generic rewrite (as upstream's None)."""
        holder = _ModeHolder(mode if mode in ("cm", "cu") else None)
        return self._question(holder, list(history), current)


@dataclass(frozen=True)
class _ModeHolder:
    """Stands in for the inferencer object: the question reads only ``self.nonmarkov_mode``."""

    nonmarkov_mode: str | None


def judge_texts(repo: str | os.PathLike, pins: dict[str, str] | None = None) -> JudgeTexts:
    return JudgeTexts(UpstreamCheckout(repo, pins))


def ic_cot_texts(repo: str | os.PathLike, pins: dict[str, str] | None = None) -> IcCotTexts:
    return IcCotTexts(UpstreamCheckout(repo, pins))
