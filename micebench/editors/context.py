"""How a single-turn editor sees a multi-turn session (``-M context=...``).

Most editors (diffusers pipelines, image-edit APIs, a command) take one image and one instruction.
:class:`SessionContext` turns an :class:`EditRequest`, which carries the whole history, into what
such an editor gets for the turn, a :class:`TurnPlan`:

- ``chain`` (default): the previous output, edited with the current instruction (EdiVal's protocol);
- ``concat``: the SOURCE image, edited with every instruction so far joined into one (the earlier
  ones first); starting from the source keeps earlier edits from being applied twice;
- ``multi-image``: the source and the earlier outputs (at most ``max_images``, the source and the
  latest outputs kept), with the current instruction, for editors that take several images;
- ``ic-cot``: intent reconstruction for any editor. From turn 2 on, a vision-language model reads
  the earlier instructions (and, with ``vlm_images``, the images) and writes one self-contained
  instruction that resolves references and restates standing rules; the editor executes that on
  the previous output. Turn 1 has nothing to reconstruct and goes to the editor as written.

The instruction a plan carries is what the editor is told, and editors return it as the turn's
``effective_instruction``. For ``ic-cot`` the VLM's reply, the model and a hash of the prompt
template are stored in the turn's ``extra``; a VLM that fails, or replies with nothing usable,
makes the turn an error row, never a silent fall back to the raw instruction.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from micebench.editors.base import EditorConfig
from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult

CONTEXT_MODES = ("chain", "concat", "multi-image", "ic-cot")

# Our own wording (not taken from any paper or project). {history}, {instruction} and {images_note}
# are filled in per turn; a user-supplied template (ic_cot_template=FILE) may use the same three.
IC_COT_TEMPLATE = """\
An image editor is working through an editing session one step at a time. It only ever sees the \
current picture and a single instruction, so it does not know what was asked before.

Steps already carried out, oldest first:
{history}

The next step, exactly as the user wrote it:
{instruction}
{images_note}
Write the next step as one instruction the editor can follow without knowing the earlier steps:
- replace every word that points back to an earlier step ("it", "them", "the one I added", \
"the same colour", "undo that") with what it refers to;
- restate each rule from an earlier step that is meant to keep holding (for example "the lamp \
must stay on in every version") whenever this step could break it;
- do not ask again for changes that earlier steps have already made;
- if the step already stands on its own, return it unchanged.
Answer with the instruction alone, on one line, without quotes or explanation."""

IMAGES_NOTE = {
    "none": "",
    "latest": "\nThe attached picture is the current one: the result of the last step.\n",
    "all": "\nThe attached pictures are the original, then the result of each step, in order.\n",
}


class ContextOptions(EditorConfig):
    """Options shared by single-turn editors (diffusers, openai-images, command)."""

    context: Literal["chain", "concat", "multi-image", "ic-cot"] = Field(
        "chain", description="How the session is shown to the editor: chain, concat, multi-image or ic-cot."
    )
    concat_separator: str = Field(" ", description="concat: text between instructions (each ends with a full stop).")
    max_images: int = Field(3, ge=2, description="multi-image: most images sent (the source and the latest outputs).")
    vlm_backend: Literal["openai", "transformers"] = Field(
        "openai", description="ic-cot: an OpenAI-compatible server, or a local Qwen2.5-VL run with transformers."
    )
    vlm_base_url: str | None = Field(None, description="ic-cot: server URL ending before /chat/completions.")
    vlm_base_url_env: str = Field("MICEBENCH_VLM_BASE_URL", description="ic-cot: variable read when no vlm_base_url.")
    vlm_api_key_env: str = Field("MICEBENCH_VLM_API_KEY", description="ic-cot: variable holding the API key, if any.")
    vlm_model: str | None = Field(None, description="ic-cot: model name sent to the server.")
    vlm_path: str | None = Field(None, description="ic-cot with vlm_backend=transformers: local Qwen2.5-VL folder.")
    vlm_device: str = "auto"
    vlm_images: Literal["none", "latest", "all"] = Field(
        "none", description="ic-cot: images the VLM sees: none, the latest picture, or all (source + outputs)."
    )
    vlm_max_tokens: int = Field(512, ge=8)
    vlm_temperature: float = Field(0.0, ge=0.0)
    vlm_timeout_s: float = Field(120.0, gt=0)
    vlm_max_retries: int = Field(4, ge=0)
    vlm_concurrency: int = Field(8, ge=1)
    ic_cot_template: Path | None = Field(
        None, description="ic-cot: a text file replacing the built-in prompt ({history}, {instruction}, {images_note})."
    )


@dataclass(frozen=True)
class TurnPlan:
    """What a single-turn editor is asked to do for one turn.

    ``images`` are the images to send, the one to edit last (one image except for multi-image);
    ``roles`` names each ("source", "turn 2", ...). ``error`` is set when the plan could not be
    made (the VLM failed): the turn becomes an error row carrying ``extra``.
    """

    instruction: str
    images: tuple[Any, ...]
    roles: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def turn_seed(seed: int, session_id: str, turn_index: int) -> int:
    """A seed per (run seed, session, turn): a turn's noise does not depend on batch order or size."""
    digest = hashlib.sha256(f"{session_id}\x00{turn_index}".encode()).digest()
    return (seed + int.from_bytes(digest[:4], "big")) % (2**31)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?;:" else text + "."


def _clean_reply(text: str) -> str:
    """The VLM's instruction: whitespace collapsed, one pair of wrapping quotes removed."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


class SessionContext:
    """Builds a :class:`TurnPlan` per request according to ``options.context``.

    ``vlm`` may be passed (anything with the VLM ``ask`` interface); otherwise it is built from the
    options on first use: :class:`~micebench.judges.backends.vlm.OpenAIChatVLM` or the local
    transformers Qwen2.5-VL.
    """

    def __init__(self, options: ContextOptions, *, editor: str = "editor", vlm: Any = None) -> None:
        self.options = options
        self.editor = editor
        self._vlm = vlm
        self._template: str | None = None

    # -- setup -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.options.context

    @property
    def template(self) -> str:
        if self._template is None:
            path = self.options.ic_cot_template
            if path is None:
                self._template = IC_COT_TEMPLATE
            else:
                try:
                    self._template = Path(path).read_text(encoding="utf-8")
                except OSError as e:
                    raise SetupError(f"{self.editor}: cannot read ic_cot_template {path}: {e}") from e
                missing = [k for k in ("{history}", "{instruction}") if k not in self._template]
                if missing:
                    raise SetupError(f"{self.editor}: ic_cot_template {path} lacks {' and '.join(missing)}")
        return self._template

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    def check(self) -> None:
        """Cheap checks (no network, no model load): raise SetupError naming what is missing."""
        o = self.options
        if o.context != "ic-cot" or self._vlm is not None:
            return
        _ = self.template
        if o.vlm_backend == "transformers":
            if not o.vlm_path:
                raise SetupError(f"{self.editor}: context=ic-cot with vlm_backend=transformers needs -M vlm_path=DIR")
            return
        import importlib.util

        if importlib.util.find_spec("httpx") is None:
            raise SetupError(f"{self.editor}: context=ic-cot with a server needs httpx: pip install 'micebench[vlm]'")
        if not (o.vlm_base_url or os.environ.get(o.vlm_base_url_env)):
            raise SetupError(f"{self.editor}: context=ic-cot needs a VLM server: -M vlm_base_url=URL or "
                             f"the environment variable {o.vlm_base_url_env}")  # fmt: skip
        if not o.vlm_model:
            raise SetupError(f"{self.editor}: context=ic-cot needs -M vlm_model=NAME (the model the server serves)")

    def preflight(self) -> None:
        """Before any work: the cheap checks, then for ic-cot make sure the VLM can answer. A server
        must be reachable and accept the key (GET /models; any other answer counts as reachable);
        a local VLM is loaded. Raises SetupError with one line."""
        if self.mode != "ic-cot" or self._vlm is not None:
            return
        self.check()
        o = self.options
        if o.vlm_backend == "transformers":
            _ = self.vlm
            return
        import urllib.error
        import urllib.request

        base = (o.vlm_base_url or os.environ.get(o.vlm_base_url_env, "")).rstrip("/")
        key = os.environ.get(o.vlm_api_key_env)
        req = urllib.request.Request(base + "/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(req, timeout=min(10.0, o.vlm_timeout_s)):
                return
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise SetupError(f"{self.editor}: the ic-cot VLM server at {base} refused the key (HTTP {e.code}); "
                                 f"check ${o.vlm_api_key_env}") from e  # fmt: skip
            return  # it answered: reachable (not every server serves /models)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SetupError(f"{self.editor}: the ic-cot VLM server at {base} cannot be reached: {reason}") from e

    @property
    def vlm(self) -> Any:
        if self._vlm is None:
            self.check()
            o = self.options
            if o.vlm_backend == "transformers":
                from micebench.judges.backends.vlm import TransformersQwenVLM

                try:
                    self._vlm = TransformersQwenVLM(o.vlm_path or "", o.vlm_device)
                except (OSError, ImportError, ValueError) as e:
                    raise SetupError(f"{self.editor}: cannot load the ic-cot VLM from {o.vlm_path}: {e}") from e
            else:
                from micebench.judges.backends.vlm import OpenAIChatVLM

                base = o.vlm_base_url or os.environ.get(o.vlm_base_url_env, "")
                self._vlm = OpenAIChatVLM(
                    base, o.vlm_model or "", api_key=os.environ.get(o.vlm_api_key_env) or None,
                    timeout_s=o.vlm_timeout_s, max_retries=o.vlm_max_retries, concurrency=o.vlm_concurrency,
                )  # fmt: skip
        return self._vlm

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the context (the config itself is recorded elsewhere)."""
        out: dict[str, Any] = {"context": self.mode}
        if self.mode == "ic-cot":
            out["ic_cot_prompt_sha256"] = self.prompt_sha256
            out["ic_cot_vlm"] = self.options.vlm_model or self.options.vlm_path or ""
        return out

    # -- planning ----------------------------------------------------------------------------
    @staticmethod
    def split(plans: list[TurnPlan]) -> tuple[list[Any], list[int]]:
        """Results with an error row already in place for every plan that failed, and the indices still to edit."""
        results: list[Any] = [None] * len(plans)
        todo = []
        for i, p in enumerate(plans):
            if p.error is not None:
                results[i] = EditResult(error=p.error, extra=p.extra)
            else:
                todo.append(i)
        return results, todo

    def plan(self, requests: list[EditRequest]) -> list[TurnPlan]:
        """One plan per request, in order; ic-cot questions go to the VLM concurrently."""
        if self.mode != "ic-cot":
            return [self._plan_plain(r) for r in requests]
        asking = [r for r in requests if r.turn_index > 0]
        if not asking:
            return [self._plan_ic_cot(r) for r in requests]
        _ = self.vlm  # a setup problem raises here, once, not per turn
        workers = max(1, min(self.options.vlm_concurrency, len(asking)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="micebench-ic-cot") as pool:
            return list(pool.map(self._plan_ic_cot, requests))

    def _plan_plain(self, r: EditRequest) -> TurnPlan:
        mode = self.mode
        if mode == "concat":
            parts = [_sentence(x) for x in (*r.history_instructions, r.instruction)]
            text = self.options.concat_separator.join(p for p in parts if p)
            return TurnPlan(text, (r.source_image,), ("source",), {"context": mode, "context_images": ["source"]})
        if mode == "multi-image":
            images = [r.source_image, *r.history_images]
            roles = ["source", *(f"turn {k + 1}" for k in range(len(r.history_images)))]
            n = self.options.max_images
            if len(images) > n:  # keep the source and the latest outputs
                images, roles = images[:1] + images[len(images) - n + 1 :], roles[:1] + roles[len(roles) - n + 1 :]
            return TurnPlan(r.instruction, tuple(images), tuple(roles), {"context": mode, "context_images": roles})
        return TurnPlan(r.instruction, (r.previous_image,), (_previous_role(r),),
                        {"context": mode, "context_images": [_previous_role(r)]})  # fmt: skip

    def ic_cot_prompt(self, r: EditRequest) -> tuple[str, list[Any]]:
        """The prompt and images the VLM gets for a turn (turn 2 on)."""
        history = "\n".join(f"{k + 1}. {text}" for k, text in enumerate(r.history_instructions))
        note = IMAGES_NOTE[self.options.vlm_images]
        prompt = self.template.replace("{history}", history).replace("{instruction}", r.instruction)
        prompt = prompt.replace("{images_note}", note)
        if self.options.vlm_images == "all":
            images = [r.source_image, *r.history_images]
        elif self.options.vlm_images == "latest":
            images = [r.previous_image]
        else:
            images = []
        return prompt, images

    def _plan_ic_cot(self, r: EditRequest) -> TurnPlan:
        role = _previous_role(r)
        base = {"context": "ic-cot", "context_images": [role]}
        if r.turn_index == 0:
            return TurnPlan(r.instruction, (r.previous_image,), (role,),
                            {**base, "ic_cot": {"skipped": "first turn: nothing to reconstruct"}})  # fmt: skip
        from micebench.judges.backends.vlm import VLMError

        prompt, images = self.ic_cot_prompt(r)
        record: dict[str, Any] = {
            "model": getattr(self.vlm, "name", "") or self.options.vlm_model or "",
            "prompt_sha256": self.prompt_sha256,
            "images": self.options.vlm_images,
        }
        try:
            reply = self.vlm.ask(images, prompt, temperature=self.options.vlm_temperature,
                                 max_tokens=self.options.vlm_max_tokens)  # fmt: skip
        except VLMError as e:
            record["raw"] = getattr(e, "raw", "")[:2000]
            return TurnPlan(r.instruction, (r.previous_image,), (role,), {**base, "ic_cot": record},
                            error=f"ic-cot: the VLM gave no instruction: {e}")  # fmt: skip
        record.update(reply=reply.text, finish_reason=reply.finish_reason)
        if getattr(reply, "truncated", False):
            return TurnPlan(r.instruction, (r.previous_image,), (role,), {**base, "ic_cot": record},
                            error=f"ic-cot: the VLM reply was cut off at vlm_max_tokens={self.options.vlm_max_tokens}")
        text = _clean_reply(reply.text)
        if not text:
            return TurnPlan(r.instruction, (r.previous_image,), (role,), {**base, "ic_cot": record},
                            error="ic-cot: the VLM replied with an empty instruction")  # fmt: skip
        record["instruction"] = text
        return TurnPlan(text, (r.previous_image,), (role,), {**base, "ic_cot": record})


def _previous_role(r: EditRequest) -> str:
    return f"turn {r.turn_index}" if r.turn_index else "source"
