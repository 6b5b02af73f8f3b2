"""Architecture settings of BAGEL-7B-MoT, read from the official ``llm_config.json`` / ``vit_config.json``.

The JSON files carry the Qwen2 and SigLIP fields; the overrides BAGEL applies in code (QK-norm, untied
lm_head, a ViT with one layer fewer than the JSON says, 70x70 ViT positions, 64x64 latent positions,
2x2 latent patches) are applied here, so the rest of the package only sees the architecture actually run.
Everything is plain Python (no torch import).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the file (and tensor)."""


@dataclass(frozen=True)
class LLMConfig:
    """The Qwen2 decoder (both experts share these sizes)."""

    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    vocab_size: int = 152064
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def check(self, where: str) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(f"{where}: hidden_size {self.hidden_size} not divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(f"{where}: num_attention_heads not divisible by num_key_value_heads")
        if self.head_dim % 2:
            raise CheckpointError(f"{where}: head_dim {self.head_dim} must be even for RoPE")


@dataclass(frozen=True)
class ViTConfig:
    """The SigLIP NaViT encoder, as built (``num_hidden_layers`` is already the JSON value minus one)."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 26
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 980
    layer_norm_eps: float = 1e-6
    num_channels: int = 3

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class VAEConfig:
    """The FLUX autoencoder. Widths are inferred from ``ae.safetensors`` (official: ch 128, mult 1,2,4,4)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class BagelConfig:
    """The whole model: LLM + ViT + the adapters between them and the VAE latent space."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vit_max_num_patch_per_side: int = 70
    max_latent_size: int = 64
    latent_patch_size: int = 2
    timestep_freq_dim: int = 256

    @property
    def latent_channel(self) -> int:
        return self.vae.z_channels

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def latent_downsample(self) -> int:
        """Pixels per latent token along each side (8 * 2 = 16 for the official VAE)."""
        return self.vae.downsample * self.latent_patch_size


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected in the BAGEL-7B-MoT checkpoint folder)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _pick(data: dict[str, Any], cls: type, path: Path, renames: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in cls.__dataclass_fields__:
        key = (renames or {}).get(name, name)
        if key in data:
            value = data[key]
            default = cls.__dataclass_fields__[name].default
            if isinstance(default, int) and not isinstance(value, int):
                raise CheckpointError(f"{path}: field {key!r} must be an integer, got {value!r}")
            out[name] = value
    return out


def read_llm_config(path: Path) -> LLMConfig:
    data = _read_json(path)
    if data.get("rope_scaling") not in (None, {}):
        rs = data["rope_scaling"]
        kind = rs.get("rope_type", rs.get("type")) if isinstance(rs, dict) else rs
        if kind not in (None, "default"):
            raise CheckpointError(f"{path}: rope_scaling {rs!r} is not supported (BAGEL uses default RoPE)")
    if data.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path}: hidden_act {data['hidden_act']!r}; the Qwen2 MLP here uses silu")
    cfg = LLMConfig(**_pick(data, LLMConfig, path))
    cfg.check(str(path))
    return cfg


def read_vit_config(path: Path) -> ViTConfig:
    data = _read_json(path)
    if isinstance(data.get("vision_config"), dict):  # a full SiglipConfig rather than the vision part
        data = data["vision_config"]
    if data.get("hidden_act", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise CheckpointError(f"{path}: hidden_act {data['hidden_act']!r}; the SigLIP MLP here uses gelu-tanh")
    values = _pick(data, ViTConfig, path)
    layers = values.get("num_hidden_layers", 27)
    if layers < 2:
        raise CheckpointError(f"{path}: num_hidden_layers {layers}; BAGEL builds one layer fewer, so need >= 2")
    values["num_hidden_layers"] = layers - 1  # BAGEL drops the last SigLIP layer
    cfg = ViTConfig(**values)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise CheckpointError(f"{path}: hidden_size not divisible by num_attention_heads")
    return cfg


def read_bagel_config(folder: Path, vae: VAEConfig | None = None) -> BagelConfig:
    """Read both JSON configs of a checkpoint folder and apply BAGEL's code-level overrides."""
    return BagelConfig(
        llm=read_llm_config(folder / "llm_config.json"),
        vit=read_vit_config(folder / "vit_config.json"),
        vae=vae or VAEConfig(),
    )


def llm_config_json(cfg: LLMConfig) -> dict[str, Any]:
    """The ``llm_config.json`` content for ``cfg`` (Qwen2Config field names), used to write test checkpoints."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def vit_config_json(cfg: ViTConfig) -> dict[str, Any]:
    """The ``vit_config.json`` content for a built ViT ``cfg`` (the JSON holds one layer more)."""
    return {
        "model_type": "siglip_vision_model",
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers + 1,
        "num_attention_heads": cfg.num_attention_heads,
        "patch_size": cfg.patch_size,
        "image_size": cfg.image_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "num_channels": cfg.num_channels,
    }
