"""The ``diffusers`` editor: any image-editing pipeline from diffusers, by hub id or local folder.

    micebench run --suite photos --model diffusers -M model=black-forest-labs/FLUX.1-Kontext-dev

The pipeline class comes from the model's ``model_index.json`` (or ``-M family=...``). Known families
get their authors' recommended call arguments (:data:`FAMILIES`); any option the user sets wins,
and ``-M call_kwargs={...}`` passes anything else the pipeline's ``__call__`` takes. Every argument
is checked against that signature before any work, so a typo is a setup error, not 100 error rows.

Each turn's noise comes from a CPU generator seeded by (seed, session id, turn index): the same run
gives the same pixels on any device, batch size or order. Sessions are batched into one pipeline call
where the family allows it and the images have the same size; the multi-image Qwen variant takes one
prompt per call. The manifest records the family, the pipeline class, the pipeline's own ``__call__``
defaults, the family defaults and the exact arguments used.

diffusers and torch are imported only when the editor is prepared: ``resolve()`` (cheap: reads
``model_index.json`` and checks the options, no weights), ``preflight()`` = ``load()`` (the weights,
and the ic-cot VLM if any), or the first ``edit()``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from micebench.editors.base import Editor
from micebench.editors.context import ContextOptions, SessionContext, TurnPlan, turn_seed
from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult


@dataclass(frozen=True)
class Family:
    """Per-family knowledge: the pipeline class, recommended call arguments, what it can take."""

    pipeline: str
    defaults: dict[str, Any]
    batch: bool  # several sessions (same image size) in one call
    multi_image: bool  # ``image`` may be a list of images for one prompt
    size_rule: str


FAMILIES: dict[str, Family] = {
    "flux-kontext": Family(
        "FluxKontextPipeline", {"num_inference_steps": 28, "guidance_scale": 2.5}, batch=True, multi_image=False,
        size_rule="output keeps the input's aspect ratio at max_area pixels (default 1024x1024), sides multiples of "
                  "16; the input is snapped to Kontext's trained resolutions (kontext_auto_resize)",
    ),
    "qwen-image-edit": Family(
        "QwenImageEditPipeline", {"num_inference_steps": 50, "true_cfg_scale": 4.0, "negative_prompt": " "},
        batch=True, multi_image=False,
        size_rule="input and output at about 1024x1024 pixels with the input's aspect ratio, multiples of 32 "
                  "(height/width set the output)",
    ),
    "qwen-image-edit-plus": Family(
        "QwenImageEditPlusPipeline",
        {"num_inference_steps": 40, "true_cfg_scale": 4.0, "guidance_scale": 1.0, "negative_prompt": " "},
        batch=False, multi_image=True,
        size_rule="each input at about 1024x1024 (384x384 for the text encoder); output like the last input",
    ),
    "instruct-pix2pix": Family(
        "StableDiffusionInstructPix2PixPipeline",
        {"num_inference_steps": 100, "guidance_scale": 7.5, "image_guidance_scale": 1.5},
        batch=True, multi_image=False,
        size_rule="output at the input's size, rounded down to multiples of 8",
    ),
}
FAMILY_BY_CLASS = {f.pipeline: name for name, f in FAMILIES.items()}

# Editor option -> the pipeline __call__ argument it sets.
OPTION_PARAMS = {
    "steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "true_cfg_scale": "true_cfg_scale",
    "image_guidance_scale": "image_guidance_scale",
    "negative_prompt": "negative_prompt",
    "height": "height",
    "width": "width",
    "max_area": "max_area",
    "kontext_auto_resize": "_auto_resize",
}
# Arguments the editor sets per turn; call_kwargs may not override them.
PER_TURN = ("prompt", "image", "generator", "num_images_per_prompt", "output_type", "return_dict", "latents")


class DiffusersConfig(ContextOptions):
    """Options of the diffusers editor (None: the family default, else the pipeline's own default)."""

    model: str = Field(description="Hub id (from the local hub cache) or folder with model_index.json.")
    family: Literal["auto", "flux-kontext", "qwen-image-edit", "qwen-image-edit-plus", "instruct-pix2pix",
                    "generic"] = Field("auto", description="auto: from model_index.json's pipeline class.")  # fmt: skip
    revision: str | None = None
    variant: str | None = Field(None, description="Weight file variant, e.g. fp16.")
    local_files_only: bool = Field(False, description="Never contact the hub, even if the network is up.")
    steps: int | None = Field(None, ge=1, description="num_inference_steps.")
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    image_guidance_scale: float | None = None
    negative_prompt: str | None = None
    height: int | None = Field(None, ge=16)
    width: int | None = Field(None, ge=16)
    max_area: int | None = Field(None, ge=256, description="FLUX.1 Kontext: output pixel count.")
    kontext_auto_resize: bool | None = Field(None, description="FLUX.1 Kontext: snap the input to trained sizes.")
    call_kwargs: dict[str, Any] = Field(default_factory=dict, description="Other __call__ arguments, as is.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1, ...")
    offload: Literal["none", "model", "sequential"] = Field(
        "none", description="model: enable_model_cpu_offload (small GPUs); sequential: the slowest, least memory."
    )
    seed: int = 0
    max_batch: int | None = Field(None, ge=1, description="Most sessions per pipeline call (default: the run's).")


@dataclass(frozen=True)
class Resolved:
    family: str
    pipeline: str
    call_args: dict[str, Any]  # fixed arguments of every call
    pipeline_defaults: dict[str, Any]  # the pipeline's own __call__ defaults
    weights: str


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def weights_id(model: str, revision: str | None) -> str:
    """Which weights: a digest of a local folder's configs and weight files, or the hub commit."""
    root = Path(model)
    if root.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = f.relative_to(root).as_posix()
            h.update(f"{rel}:{f.stat().st_size}\n".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
        return "local:" + h.hexdigest()[:16]
    try:
        from huggingface_hub import snapshot_download

        return "hub:" + Path(snapshot_download(model, revision=revision, local_files_only=True)).name
    except Exception as e:  # recorded as the reason the revision is unknown
        return f"unknown ({_one_line(e)})"


class DiffusersEditor(Editor):
    """A diffusers image-editing pipeline run in-process; see the module docstring."""

    Config = DiffusersConfig
    description: ClassVar[str] = (
        "any diffusers image-editing pipeline by hub id or folder (FLUX.1 Kontext, Qwen-Image-Edit, InstructPix2Pix)"
    )
    needs: ClassVar[tuple[str, ...]] = ("extra diffusers", "a GPU for real models", "model weights")

    def __init__(self, config: DiffusersConfig | None = None, *, pipeline: Any = None, vlm: Any = None) -> None:
        super().__init__(config)
        self.context = SessionContext(self.config, editor="diffusers editor", vlm=vlm)
        self._pipe = pipeline
        self._resolved: Resolved | None = None

    # -- preparing ---------------------------------------------------------------------------
    def resolve(self) -> Resolved:
        """Check everything that can be checked without loading weights; raise SetupError if wrong."""
        if self._resolved is not None:
            return self._resolved
        c = self.config
        try:
            import diffusers
            import torch  # noqa: F401
        except ImportError as e:
            raise SetupError(f"diffusers editor: {e.name or 'a module'} is not installed; "
                             "pip install 'micebench[diffusers]'") from e  # fmt: skip
        try:
            index = diffusers.DiffusionPipeline.load_config(c.model, revision=c.revision,
                                                            local_files_only=c.local_files_only)  # fmt: skip
        except Exception as e:  # any failure to find the pipeline is a setup problem, said in one line
            raise SetupError(f"diffusers editor: cannot read the pipeline index of {c.model!r} "
                             f"(a folder with model_index.json, or a hub id in the local cache): {_one_line(e)}") from e
        class_name = str(index.get("_class_name", ""))
        family = c.family if c.family != "auto" else FAMILY_BY_CLASS.get(class_name, "generic")
        fam = FAMILIES.get(family)
        pipeline = fam.pipeline if fam else class_name
        cls = getattr(diffusers, pipeline, None)
        if cls is None:
            raise SetupError(f"diffusers editor: diffusers {diffusers.__version__} has no {pipeline!r} "
                             f"(named by {c.model}/model_index.json); upgrade diffusers")  # fmt: skip
        params = {n: p for n, p in inspect.signature(cls.__call__).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}  # fmt: skip
        if "image" not in params or "prompt" not in params:
            raise SetupError(f"diffusers editor: {pipeline} is not an image-editing pipeline "
                             "(its __call__ takes no image and prompt)")  # fmt: skip
        if c.context == "multi-image" and not (fam and fam.multi_image):
            multi = ", ".join(n for n, f in FAMILIES.items() if f.multi_image)
            raise SetupError(f"diffusers editor: context=multi-image needs a pipeline that takes several images "
                             f"({multi}); {pipeline} takes one")  # fmt: skip
        bad = sorted(set(c.call_kwargs) & set(PER_TURN))
        if bad:
            raise SetupError(f"diffusers editor: call_kwargs may not set {', '.join(bad)} (set per turn)")
        call_args = dict(fam.defaults) if fam else {}
        for option, param in OPTION_PARAMS.items():
            value = getattr(c, option)
            if value is not None:
                if param not in params:
                    raise SetupError(f"diffusers editor: option {option}={value!r}: {pipeline}.__call__ takes no "
                                     f"{param!r}")  # fmt: skip
                call_args[param] = value
        call_args.update(c.call_kwargs)
        unknown = sorted(k for k in call_args if k not in params)
        if unknown:
            raise SetupError(f"diffusers editor: {pipeline}.__call__ takes no {', '.join(map(repr, unknown))}")
        defaults = {n: p.default for n, p in params.items()
                    if p.default is not inspect.Parameter.empty and _jsonable(p.default)}  # fmt: skip
        self.context.check()
        self._resolved = Resolved(family, pipeline, call_args, defaults, weights_id(c.model, c.revision))
        return self._resolved

    def _device_dtype(self):
        import torch

        c = self.config
        cuda = torch.cuda.is_available()
        try:
            device = torch.device(("cuda" if cuda else "cpu") if c.device == "auto" else c.device)
        except RuntimeError as e:
            raise SetupError(f"diffusers editor: device={c.device!r} is not a torch device: {_one_line(e)}") from e
        if device.type == "cuda" and not cuda:
            raise SetupError(f"diffusers editor: device={c.device} but torch sees no CUDA GPU")
        if c.dtype == "auto":
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        else:
            dtype = getattr(torch, c.dtype)
        if c.offload != "none":
            import importlib.util

            if device.type != "cuda":
                raise SetupError(f"diffusers editor: offload={c.offload} moves modules to a GPU; none here")
            if importlib.util.find_spec("accelerate") is None:
                raise SetupError(f"diffusers editor: offload={c.offload} needs accelerate; "
                                 "pip install 'micebench[diffusers]'")  # fmt: skip
        return device, dtype

    def preflight(self) -> None:
        """Before any work: load the pipeline (and check the ic-cot VLM); SetupError if anything fails."""
        self.load()

    def load(self) -> Any:
        """Load the pipeline onto its device (once); raise SetupError when it cannot be loaded."""
        r = self.resolve()
        self.context.preflight()
        if self._pipe is not None:
            return self._pipe
        import diffusers

        c = self.config
        device, dtype = self._device_dtype()
        cls = getattr(diffusers, r.pipeline)
        # diffusers renamed torch_dtype to dtype (the old name now warns); older releases know only torch_dtype.
        from diffusers.utils import deprecation_utils

        dtype_key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
        kwargs: dict[str, Any] = {dtype_key: dtype, "local_files_only": c.local_files_only}
        if c.revision:
            kwargs["revision"] = c.revision
        if c.variant:
            kwargs["variant"] = c.variant
        try:
            pipe = cls.from_pretrained(c.model, **kwargs)
        except Exception as e:  # missing files, wrong layout, a hub id not in the cache: one line, exit 2
            raise SetupError(f"diffusers editor: cannot load {r.pipeline} from {c.model!r}: {_one_line(e)}") from e
        pipe.set_progress_bar_config(disable=True)
        try:
            if c.offload == "model":
                pipe.enable_model_cpu_offload(device=device)
            elif c.offload == "sequential":
                pipe.enable_sequential_cpu_offload(device=device)
            else:
                pipe.to(device)
        except (RuntimeError, ValueError) as e:  # e.g. no such GPU index, out of memory while moving
            raise SetupError(f"diffusers editor: cannot put {r.pipeline} on {device}: {_one_line(e)}") from e
        self._pipe = pipe
        return pipe

    def describe(self) -> dict[str, Any]:
        """Config, family, pipeline class, the pipeline's own defaults and the arguments actually used."""
        import importlib.metadata

        r = self.resolve()
        out = super().describe()
        out.update(
            family=r.family,
            pipeline=r.pipeline,
            diffusers=importlib.metadata.version("diffusers"),
            weights=r.weights,
            pipeline_defaults=r.pipeline_defaults,
            family_defaults=FAMILIES[r.family].defaults if r.family in FAMILIES else {},
            call_args=r.call_args,
            **self.context.describe(),
        )
        return out

    def close(self) -> None:
        if self._pipe is None:
            return
        self._pipe = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- editing -----------------------------------------------------------------------------
    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        pipe = self.load()
        r = self._resolved
        assert r is not None
        plans = self.context.plan(requests)
        seeds = [turn_seed(self.config.seed, q.session.id, q.turn_index) for q in requests]
        results, todo = self.context.split(plans)
        for group in self._groups(todo, plans, r):
            start = time.perf_counter()
            try:
                images = self._call(pipe, r, [plans[i] for i in group], [seeds[i] for i in group])
            except (RuntimeError, ValueError) as e:  # e.g. out of memory, an odd image: these turns only
                for i in group:
                    results[i] = EditResult(error=f"diffusers: {_one_line(e)}", extra=plans[i].extra)
                continue
            seconds = (time.perf_counter() - start) / len(group)
            for i, img in zip(group, images, strict=True):
                results[i] = EditResult(image=img, effective_instruction=plans[i].instruction, seconds=seconds,
                                        extra={**plans[i].extra, "seed": seeds[i]})  # fmt: skip
        return [res if res is not None else EditResult(error="diffusers: no result") for res in results]

    def _groups(self, todo: list[int], plans: list[TurnPlan], r: Resolved) -> list[list[int]]:
        """Batches of request indices: same image sizes, at most max_batch, singletons if not batchable."""
        fam = FAMILIES.get(r.family)
        if not (fam and fam.batch):
            return [[i] for i in todo]
        by_size: dict[tuple, list[int]] = {}
        for i in todo:
            by_size.setdefault(tuple(im.size for im in plans[i].images), []).append(i)
        n = self.config.max_batch or len(todo) or 1
        return [g[k : k + n] for g in by_size.values() for k in range(0, len(g), n)]

    def _call(self, pipe: Any, r: Resolved, plans: list[TurnPlan], seeds: list[int]) -> list[Any]:
        import torch

        n = len(plans)
        args = dict(r.call_args)
        if r.family == "flux-kontext" and "height" not in args and "width" not in args:
            # Kontext's output is square unless told the input's aspect ratio; max_area then sets the size.
            args["width"], args["height"] = plans[0].images[-1].size
        if n > 1 and isinstance(args.get("negative_prompt"), str):
            args["negative_prompt"] = [args["negative_prompt"]] * n
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        if FAMILIES.get(r.family) and FAMILIES[r.family].multi_image:
            image: Any = list(plans[0].images)  # one prompt, several images (n is 1)
        else:
            image = [p.images[-1] for p in plans] if n > 1 else plans[0].images[-1]
        out = pipe(
            prompt=[p.instruction for p in plans] if n > 1 else plans[0].instruction,
            image=image,
            generator=generators if n > 1 else generators[0],
            num_images_per_prompt=1,
            output_type="pil",
            **args,
        )
        images = list(out.images)
        if len(images) != n:
            raise RuntimeError(f"{r.pipeline} returned {len(images)} images for {n} prompts")
        return images
