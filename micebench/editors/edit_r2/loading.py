"""Loading BAGEL-7B-MoT from its official files, with strict key/shape checking and LoRA merging.

Folder layout (as on the hub): ``llm_config.json``, ``vit_config.json``, ``ema.safetensors`` (every
weight but the VAE), ``ae.safetensors`` (FLUX VAE), Qwen2 tokenizer files. Every tensor of
``ema.safetensors`` must be consumed by the model and every model parameter must be present; a
mismatch raises :class:`CheckpointError` naming the file and the tensor.

Edit-R2 LoRA files are the full state dict of the PEFT-wrapped language model (base weights included,
keys ``base_model.model.<name>.base_layer.weight`` and ``<name>.lora_A.<adapter>.weight``); merging
gives W + (alpha / r) B A, computed in fp32.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import BagelConfig, CheckpointError, read_bagel_config
from .context import Engine
from .model import BagelModel
from .tokenizer import BagelTokenizer
from .vae import AutoEncoder, infer_vae_config

EMA_FILE, AE_FILE = "ema.safetensors", "ae.safetensors"
LORA_RE = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")


def resolve_weights(weights: str) -> Path:
    """A local folder, or a hub id found in the local Hugging Face cache (nothing is downloaded)."""
    p = Path(weights).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"weights {weights!r}: expected a folder holding {EMA_FILE}, {AE_FILE} and configs")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", weights):
        try:
            from huggingface_hub import snapshot_download
        except ImportError as e:
            raise CheckpointError(
                f"weights {weights!r}: not a local folder; looking it up as a hub id needs huggingface_hub "
                f"(pip install huggingface_hub), or pass the folder path"
            ) from e
        try:
            return Path(snapshot_download(weights, local_files_only=True))
        except Exception as e:  # LocalEntryNotFoundError and friends: not cached
            raise CheckpointError(
                f"weights {weights!r}: not a local folder and not in the local Hugging Face cache "
                f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); download it first, e.g. "
                f"`huggingface-cli download {weights}`, or pass the folder path ({type(e).__name__})"
            ) from e
    raise CheckpointError(f"weights {weights!r}: no such folder (and not a hub id found in the local cache)")


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def check_keys(path: Path, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise unless ``found`` has exactly the ``expected`` tensor names and shapes."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:5])}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s), e.g. {', '.join(extra[:5])}")
        raise CheckpointError(f"{path}: {'; '.join(parts)} (config and checkpoint disagree?)")
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(found[key])}, the config implies {list(shape)} "
                "(check llm_config.json / vit_config.json against the checkpoint)"
            )


def read_tensors(path: Path, device: torch.device, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            out[k] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
    return out


@dataclass
class LoadReport:
    """What was read: kept so tests (and users) can see that every checkpoint key was consumed."""

    folder: Path
    ema_keys: list[str] = field(default_factory=list)
    ae_keys: list[str] = field(default_factory=list)
    lora_file: Path | None = None
    lora_merged: list[str] = field(default_factory=list)
    lora_scaling: float | None = None


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Split a PEFT-wrapped LLM state dict into base weights (``language_model.`` names) and A/B pairs."""
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"LoRA file {path}: missing")
    from safetensors.torch import load_file

    base: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(path)).items():
        name = key.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
        if name.startswith("base_model.model."):
            name = name[len("base_model.model.") :]
        m = LORA_RE.match(name)
        if m:
            pairs.setdefault("language_model." + m["module"], {})[m["ab"]] = t
            continue
        if "lora_" in name:
            raise CheckpointError(f"{path}: tensor {key!r} is a LoRA tensor of an unsupported kind")
        base["language_model." + name.replace(".base_layer.", ".")] = t
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{path}: LoRA module {module!r} lacks lora_{'A' if 'A' not in ab else 'B'}")
    return base, pairs


def lora_alpha_for(path: Path, default: float) -> float:
    cfg = (path if path.is_dir() else path.parent) / "adapter_config.json"
    if cfg.is_file():
        return float(json.loads(cfg.read_text()).get("lora_alpha", default))
    return default


def merge_lora(state: dict[str, torch.Tensor], path: Path, alpha: float, report: LoadReport) -> None:
    """Replace LLM weights by the LoRA file's base weights, then add (alpha / r) B A to each target, in place."""
    base, pairs = read_lora(path)
    for key, t in base.items():
        if key not in state:
            raise CheckpointError(f"LoRA file {path}: tensor {key!r} matches no model weight")
        if tuple(t.shape) != tuple(state[key].shape):
            raise CheckpointError(f"LoRA file {path}: tensor {key!r} shape {list(t.shape)} != {list(state[key].shape)}")
        state[key] = t.to(state[key].device, state[key].dtype)
    scalings = set()
    for module, ab in sorted(pairs.items()):
        key = module + ".weight"
        if key not in state:
            raise CheckpointError(f"LoRA file {path}: adapter on {module!r} matches no model weight")
        a, b = ab["A"], ab["B"]
        w = state[key]
        if a.shape[0] != b.shape[1] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise CheckpointError(
                f"LoRA file {path}: {module} A {list(a.shape)} / B {list(b.shape)} do not fit weight {list(w.shape)}"
            )
        scaling = alpha / a.shape[0]
        scalings.add(scaling)
        delta = b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)
        state[key] = (w.float() + scaling * delta).to(w.dtype)
        report.lora_merged.append(key)
    report.lora_file = path
    report.lora_scaling = scalings.pop() if len(scalings) == 1 else None


def load_engine(
    weights: str | Path,
    device: str | torch.device,
    dtype: torch.dtype,
    lora: str | Path | None = None,
    lora_alpha: float = 128.0,
    round_rope_to_bf16: bool = False,
    attn_impl: str = "auto",
) -> tuple[Engine, LoadReport]:
    """Build the model from a checkpoint folder; every tensor of both files is checked and consumed."""
    folder = resolve_weights(str(weights))
    device = torch.device(device)
    ema_path, ae_path = folder / EMA_FILE, folder / AE_FILE
    ae_shapes = safetensors_shapes(ae_path)
    cfg: BagelConfig = read_bagel_config(folder, infer_vae_config(ae_shapes, str(ae_path)))
    tokenizer = BagelTokenizer(folder)
    if tokenizer.max_id() >= cfg.llm.vocab_size:
        raise CheckpointError(
            f"{folder}: tokenizer special token id {tokenizer.max_id()} exceeds llm_config.json "
            f"vocab_size {cfg.llm.vocab_size} (language_model.model.embed_tokens.weight)"
        )
    with torch.device("meta"):
        model = BagelModel(cfg)
        vae = AutoEncoder(cfg.vae)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(ema_path, safetensors_shapes(ema_path), expected)
    check_keys(ae_path, ae_shapes, {k: tuple(v.shape) for k, v in vae.state_dict().items()})
    report = LoadReport(folder=folder)
    state = read_tensors(ema_path, device, dtype)
    report.ema_keys = sorted(state)
    if lora is not None:
        lora_path = Path(lora).expanduser()
        merge_lora(state, lora_path, lora_alpha_for(lora_path, lora_alpha), report)
    model.load_state_dict(state, strict=True, assign=True)
    ae_state = read_tensors(ae_path, device, torch.float32)
    report.ae_keys = sorted(ae_state)
    vae.load_state_dict(ae_state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    model.language_model.round_inv_freq_to_bf16 = round_rope_to_bf16
    model.language_model.attn_impl = attn_impl
    return Engine(model, vae, tokenizer, device, dtype), report
