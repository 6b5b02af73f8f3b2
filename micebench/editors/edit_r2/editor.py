"""The ``edit-r2`` and ``bagel`` editors: BAGEL-7B-MoT editing, with (edit-r2) or without (bagel) IC-CoT.

Per session the editor keeps two contexts between turns (see BAGEL_FACTS section 6):
``gen`` = [VAE+ViT source][p0][VAE+ViT out0][p1]... and ``cfg_img`` = [p0][p1]... (text only).
A turn: IC-CoT rewrite (turn 2+, edit-r2), snapshot ``gen`` as the text-unconditional context, append the
instruction to both contexts, sample, decode, append the output image to ``gen``. The state is dropped
after a session's last turn, evicted least-recently-used beyond ``max_cached_sessions``, and rebuilt
from the request's history when missing or not matching (e.g. after a resume).

Noise for a turn is drawn on the CPU from a generator seeded by (seed, session id, turn index), so a
turn's image does not depend on batch order (batch composition can change it at rounding level only).

A batch of requests is edited together (``packed``, the default): IC-CoT decoding, every sampling step
(the three CFG branches of every turn as ONE packed forward), the VAE decode and the context update are
each one batched pass. ``packed=false`` edits the requests one by one with one forward per branch: the
reference path, kept for comparisons (tests and ``bench/edit_r2_throughput.py``).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from micebench.editors.base import Editor, EditorConfig
from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult


class EditR2Config(EditorConfig):
    """Options of the Edit-R2 reference editor (defaults: Edit-R2's evaluation settings)."""

    weights: str = Field("ByteDance-Seed/BAGEL-7B-MoT", description="Checkpoint folder, or hub id in the HF cache.")
    lora: str | None = Field(None, description="Edit-R2 LoRA file (PEFT-wrapped full state dict) to merge.")
    lora_alpha: float = Field(128.0, gt=0, description="LoRA alpha when no adapter_config.json says (r from shapes).")
    steps: int = Field(50, ge=2, description="Timesteps; the model is evaluated steps - 1 times.")
    cfg_text: float = 4.0
    cfg_img: float = 2.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    cfg_renorm: Literal["text_channel", "global", "channel", "none"] = "text_channel"
    cfg_renorm_min: float = Field(0.0, ge=0, le=1)
    timestep_shift: float = Field(3.0, gt=0)
    resolution: int = Field(512, ge=16, le=1024, description="Square output side, a multiple of 16.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = "auto"
    ic_cot: Literal["auto", "cm", "cu", "generic", "off"] = "auto"
    ic_cot_system_prompt: str | None = Field(None, description="Replace the built-in think-then-answer prompt.")
    upstream_repo: str | None = Field(
        None, description="Edit-R2 checkout: IC-CoT uses the authors' text (default $MICEBENCH_EDITR2_REPO)."
    )
    seed: int = 42
    max_think_tokens: int = Field(300, ge=2, description="IC-CoT decode budget, counting the initial BOS.")
    rope_inv_freq_dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16", description="bfloat16 reproduces Edit-R2's evaluation cast; float32 upstream BAGEL's demo."
    )
    attn_impl: Literal["auto", "sdpa", "flash"] = "auto"
    context_min_side: int = Field(
        512, ge=16, le=1024, description="Short edge that context images are resized up to (BAGEL: 512)."
    )
    max_cached_sessions: int = Field(8, ge=0, description="Sessions whose contexts stay in memory between turns.")
    # speed: how the work is laid out; the numbers stay those of the one-at-a-time path (within rounding)
    packed: bool = Field(
        True, description="Edit a batch together, one packed forward per sampling step; false: one by one."
    )
    compile: bool = Field(False, description="torch.compile the decoder layers of the packed path (slow first call).")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"resolution {v} must be a multiple of 16 (one latent token per 16x16 pixels)")
        return v

    @field_validator("cfg_interval")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"cfg_interval {v} must satisfy 0 <= lo <= hi <= 1")
        return v

    @model_validator(mode="after")
    def _upstream_checkout(self) -> EditR2Config:
        """A given checkout is checked when the options are read: a wrong one stops the run before any work."""
        if self.ic_cot != "off":
            from .prompts import ic_cot_text

            ic_cot_text(self.upstream_repo)
        return self


class BagelConfig(EditR2Config):
    """The ``bagel`` baseline: same model and sampler, IC-CoT off, upstream's fp32 RoPE frequencies."""

    ic_cot: Literal["auto", "cm", "cu", "generic", "off"] = "off"
    rope_inv_freq_dtype: Literal["bfloat16", "float32"] = "float32"


def image_fingerprint(img: Any) -> str:
    return hashlib.sha256(f"{img.mode}{img.size}".encode() + img.tobytes()).hexdigest()


def turn_seed(seed: int, session_id: str, turn_index: int) -> int:
    digest = hashlib.sha256(f"{session_id}\x00{turn_index}".encode()).digest()
    return (seed + int.from_bytes(digest[:4], "big")) % (2**31)


def rewrite_extra(rw) -> dict[str, Any]:
    """What a turn's ``EditResult.extra`` records about its IC-CoT rewrite."""
    return {
        "ic_cot_trace": rw.raw_output,
        "ic_cot_tokens": rw.num_tokens,
        "ic_cot_fallback": rw.fallback is not None,
        "ic_cot_fallback_reason": rw.fallback,
    }


@dataclass
class SessionState:
    gen: Any  # Context
    cfg_img: Any  # Context
    next_turn: int
    raw: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    last_image: str = ""

    def matches(self, req: EditRequest) -> bool:
        if self.next_turn != req.turn_index or self.raw != list(req.history_instructions):
            return False
        if req.history_effective and self.effective != list(req.history_effective):
            return False
        return not req.history_images or self.last_image == image_fingerprint(req.history_images[-1])


class EditR2Editor(Editor):
    """BAGEL-7B-MoT multi-turn editing with Edit-R2's in-context intent reconstruction (IC-CoT)."""

    description: ClassVar[str] = "the reference editor: BAGEL-7B-MoT with Edit-R2's intent reconstruction (IC-CoT)"
    needs: ClassVar[tuple[str, ...]] = ("extra models", "a GPU with ~32 GB", "BAGEL-7B-MoT weights (-M weights=DIR)")

    Config: ClassVar[type[EditorConfig]] = EditR2Config

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__(config)
        self._engine = None
        self.load_report = None
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.ic_cot_text = None  # which IC-CoT texts: the authors' (upstream_repo) or micebench's paraphrase
        if self.config.ic_cot != "off":
            from .prompts import PARAPHRASE_NOTE, ic_cot_text

            self.ic_cot_text = ic_cot_text(self.config.upstream_repo)
            if self.ic_cot_text.source == "paraphrase":
                import warnings

                warnings.warn(PARAPHRASE_NOTE, UserWarning, stacklevel=2)

    # -- loading ---------------------------------------------------------------------------------
    def _resolve_device_dtype(self):
        import torch

        c = self.config
        device = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
        if c.dtype == "auto":
            dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        else:
            dtype = getattr(torch, c.dtype)
        return device, dtype

    @property
    def engine(self):
        if self._engine is None:
            try:
                import safetensors  # noqa: F401
                import torch  # noqa: F401
            except ImportError as e:
                raise ImportError(f"the {self.name or 'edit-r2'} editor needs torch and safetensors: "
                                  "pip install 'micebench[models]'") from e  # fmt: skip
            from .attention import FLASH_MISSING, flash_available
            from .loading import load_engine

            device, dtype = self._resolve_device_dtype()
            c = self.config
            if c.attn_impl == "flash" and not flash_available():
                raise SetupError(FLASH_MISSING)
            self._engine, self.load_report = load_engine(
                c.weights,
                device,
                dtype,
                lora=c.lora,
                lora_alpha=c.lora_alpha,
                round_rope_to_bf16=c.rope_inv_freq_dtype == "bfloat16",
                attn_impl=c.attn_impl,
            )
            self._engine.vae_resize = (1024, c.context_min_side, 16)
            if c.compile:
                self._engine.llm.compile_layers()
        return self._engine

    def use_engine(self, engine) -> None:
        """Edit with an already built :class:`.context.Engine` (benchmarks: a full-size model with random
        weights built on the GPU); the checkpoint options are then not used."""
        self._engine = engine
        engine.vae_resize = (1024, self.config.context_min_side, 16)
        engine.llm.attn_impl = self.config.attn_impl
        if self.config.compile and not engine.llm.compiled:
            engine.llm.compile_layers()

    def preflight(self) -> None:
        """Cheap checks before any work (no weights read): torch and safetensors importable, flash-attn
        present when ``attn_impl=flash``, the checkpoint folder found. Raises :class:`SetupError`."""
        name = self.name or "edit-r2"
        try:
            import safetensors  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            raise SetupError(f"the {name} editor needs torch and safetensors: pip install 'micebench[models]'") from e
        from .attention import FLASH_MISSING, flash_available
        from .config import CheckpointError
        from .loading import resolve_weights

        if self.config.attn_impl == "flash" and not flash_available():
            raise SetupError(FLASH_MISSING)
        try:
            resolve_weights(self.config.weights)
        except CheckpointError as e:
            raise SetupError(str(e)) from e

    def close(self) -> None:
        self._sessions.clear()
        if self._engine is None:
            return
        self._engine = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        """The config plus a hash of the IC-CoT prompt texts, so a prompt change shows in the manifest."""
        from .prompts import PARAPHRASE_NOTE, TASKS, THINK_SYSTEM_PROMPT

        out = super().describe()
        text = self.ic_cot_text
        if text is not None and text.source == "upstream":
            from micebench.upstream import EDIT_R2_COMMIT

            texts = [self.config.ic_cot_system_prompt or text.system_prompt, text.sha256]
            out["ic_cot_upstream_commit"] = EDIT_R2_COMMIT
        else:
            texts = [self.config.ic_cot_system_prompt or THINK_SYSTEM_PROMPT, *(TASKS[k] for k in sorted(TASKS))]
        out["ic_cot_prompt_sha256"] = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        out["ic_cot_text"] = "off" if text is None else text.source
        if text is not None and text.source == "paraphrase":
            out["ic_cot_text_note"] = PARAPHRASE_NOTE
        return out

    # -- editing ---------------------------------------------------------------------------------
    def ic_cot_mode(self, req: EditRequest) -> str:
        mode = self.config.ic_cot
        if mode == "auto":
            from .prompts import mode_for_subset

            return mode_for_subset(req.session.subset)
        return mode

    def _ic_cot_texts(self):
        """The IC-CoT texts in use (the authors' or the paraphrase, see ``prompts.ic_cot_text``)."""
        from .prompts import PARAPHRASE

        return self.ic_cot_text or PARAPHRASE  # None only when ic_cot=off in the config but forced here

    def _ic_cot_system_prompt(self) -> str:
        return self.config.ic_cot_system_prompt or self._ic_cot_texts().system_prompt

    def _sampler_settings(self):
        from .sampler import SamplerSettings

        c = self.config
        return SamplerSettings(
            steps=c.steps,
            shift=c.timestep_shift,
            cfg_text=c.cfg_text,
            cfg_img=c.cfg_img,
            cfg_interval=tuple(c.cfg_interval),
            renorm=c.cfg_renorm,
            renorm_min=c.cfg_renorm_min,
        )

    def _noise(self, engine, req: EditRequest, side: int):
        import torch

        gen_cpu = torch.Generator(device="cpu").manual_seed(turn_seed(self.config.seed, req.session.id, req.turn_index))
        return torch.randn(side * side, engine.cfg.patch_latent_dim, generator=gen_cpu, dtype=torch.float32)

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        engine = self.engine  # a loading error fails the whole batch, naming the file
        if self.config.packed:
            from .batched_editor import edit_packed

            return edit_packed(self, engine, requests)
        results = []
        for req in requests:
            start = time.perf_counter()
            try:
                image, effective, extra = self._edit_one(engine, req)
            except (RuntimeError, ValueError) as e:  # e.g. out of memory, a too-large image: this turn only
                self._sessions.pop(req.session.id, None)
                results.append(EditResult(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - start))
                continue
            results.append(
                EditResult(
                    image=image, effective_instruction=effective, extra=extra, seconds=time.perf_counter() - start
                )
            )
        return results

    def _rebuild(self, engine, req: EditRequest, add_image=None) -> SessionState:
        """The session's contexts rebuilt from the request's history (``add_image(engine, ctx, img)`` appends)."""
        from .context import Context

        def engine_add_image(engine, ctx, img):
            return engine.add_image(ctx, img)

        add_image = add_image or engine_add_image
        gen, cimg = add_image(engine, Context(), req.source_image), Context()
        used = list(req.history_effective) if req.history_effective else list(req.history_instructions)
        for text, img in zip(used, req.history_images, strict=True):
            gen, cimg = engine.add_text(gen, text), engine.add_text(cimg, text)
            gen = add_image(engine, gen, img)
        last = image_fingerprint(req.history_images[-1]) if req.history_images else ""
        return SessionState(gen, cimg, req.turn_index, list(req.history_instructions), used, last)

    def _edit_one(self, engine, req: EditRequest):
        from .generation import ic_cot_rewrite
        from .sampler import sample

        c = self.config
        sid = req.session.id
        extra: dict[str, Any] = {}
        state = self._sessions.pop(sid, None)
        if state is None or not state.matches(req):
            state = self._rebuild(engine, req)
            if req.turn_index > 0:
                extra["context_rebuilt"] = True
                if not req.history_effective:
                    extra["context_note"] = "history_effective not given: earlier raw instructions used"

        instruction = req.instruction
        mode = self.ic_cot_mode(req)
        extra["ic_cot_mode"] = mode
        if req.turn_index > 0 and mode != "off":
            rw = ic_cot_rewrite(
                engine,
                state.gen,
                list(req.history_instructions),
                req.instruction,
                mode,
                max_length=c.max_think_tokens,
                system_prompt=self._ic_cot_system_prompt(),
                question=self._ic_cot_texts().question(list(req.history_instructions), req.instruction, mode),
            )
            instruction = rw.instruction
            extra.update(rewrite_extra(rw))

        ctx_text_uncond = state.gen
        gen = engine.add_text(state.gen, instruction)
        cimg = engine.add_text(state.cfg_img, instruction)
        side = c.resolution // engine.cfg.latent_downsample
        noise = self._noise(engine, req, side)
        x = sample(
            noise.to(engine.device),
            self._sampler_settings(),
            lambda x, t: engine.velocity(gen, x, t, side, side),
            lambda x, t: engine.velocity(ctx_text_uncond, x, t, side, side),
            lambda x, t: engine.velocity(cimg, x, t, side, side),
        )
        image = engine.decode_latents(x, side, side)

        last_turn = req.turn_index == len(req.session.turns) - 1
        if not last_turn and c.max_cached_sessions > 0:
            self._keep(req, state, engine.add_image(gen, image), cimg, instruction, image)
        return image, instruction, extra

    def _keep(self, req: EditRequest, state: SessionState, gen, cimg, instruction: str, image) -> None:
        """Cache the session's contexts for its next turn; the least recently used beyond the bound go."""
        state.gen = gen
        state.cfg_img = cimg
        state.next_turn = req.turn_index + 1
        state.raw = [*state.raw, req.instruction]
        state.effective = [*state.effective, instruction]
        state.last_image = image_fingerprint(image)
        self._sessions[req.session.id] = state
        while len(self._sessions) > self.config.max_cached_sessions:
            self._sessions.popitem(last=False)


class BagelEditor(EditR2Editor):
    """The ablation baseline: BAGEL-7B-MoT with the same multi-turn context, without IC-CoT."""

    description: ClassVar[str] = "BAGEL-7B-MoT with the same multi-turn context, without IC-CoT (ablation baseline)"

    Config: ClassVar[type[EditorConfig]] = BagelConfig
