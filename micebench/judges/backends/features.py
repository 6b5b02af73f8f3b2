"""Patch features: the :class:`FeatureExtractor` interface, DINOv3 ViT via transformers, and via timm.

An extractor maps images to :class:`PatchFeatures`: the CLS token, the register tokens, and the
patch tokens laid out on the real patch grid of the model input (rows x cols x dim). The CC term
of the mice judge and the dino judge are computed from these.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class PatchFeatures:
    """Tokens of one image. ``patches`` has shape (rows, cols, dim); ``registers`` (n, dim)."""

    cls: np.ndarray
    patches: np.ndarray
    registers: np.ndarray
    input_size: tuple[int, int]  # (height, width) of the tensor the model saw

    @property
    def grid(self) -> tuple[int, int]:
        return (self.patches.shape[0], self.patches.shape[1])


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str
    revision: str

    def encode(self, images: list[Any]) -> list[PatchFeatures]:
        """Features of each image, in order."""
        ...


class Dinov3Features:
    """DINOv3 ViT (``DINOv3ViTModel`` or any ``AutoModel`` with the same token layout).

    Token layout of ``last_hidden_state``: [CLS, registers..., patches...]; the patch tokens are
    reshaped to (H / patch, W / patch) of the processed input. Images are encoded in batches of
    ``batch_size``; calls are serialised by a lock.
    """

    def __init__(self, path: str, device: str = "auto", batch_size: int = 16) -> None:
        from transformers import AutoImageProcessor, AutoModel

        from micebench.judges.backends.detector import _resolve_device, model_revision

        self.device = _resolve_device(device)
        try:
            self.processor = AutoImageProcessor.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        except OSError as e:
            raise OSError(
                f"cannot load DINOv3 from {path!r}: {e}. Give a local directory written by save_pretrained "
                "or a hub id available offline (e.g. facebook/dinov3-vitl16-pretrain-lvd1689m)."
            ) from e
        cfg = self.model.config
        self.patch_size = int(cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0])
        self.num_registers = int(getattr(cfg, "num_register_tokens", 0) or 0)
        self.batch_size = batch_size
        self.name = str(path)
        self.revision = model_revision(path, self.model)
        self._lock = threading.Lock()

    def encode(self, images: list[Any]) -> list[PatchFeatures]:
        import torch

        from micebench.images import as_rgb_image

        out: list[PatchFeatures] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [as_rgb_image(im, "feature input") for im in images[start : start + self.batch_size]]
            with self._lock, torch.no_grad():
                pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
                hidden = self.model(pixel_values=pixels).last_hidden_state.float().cpu().numpy()
            h, w = pixels.shape[-2:]
            rows, cols = h // self.patch_size, w // self.patch_size
            first_patch = 1 + self.num_registers
            if hidden.shape[1] != first_patch + rows * cols:
                raise ValueError(
                    f"{self.name}: {hidden.shape[1]} tokens for a {h}x{w} input; expected 1 CLS + "
                    f"{self.num_registers} registers + {rows}x{cols} patches"
                )
            for tokens in hidden.astype(np.float64):
                out.append(
                    PatchFeatures(
                        cls=tokens[0],
                        registers=tokens[1:first_patch],
                        patches=tokens[first_patch:].reshape(rows, cols, -1),
                        input_size=(int(h), int(w)),
                    )
                )
        return out


TIMM_DINOV3 = "timm/vit_large_patch16_dinov3.lvd1689m"


def _timm_dir(path: str) -> Any:
    """A local timm checkpoint folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), or
    a hub id found in the local Hugging Face cache (nothing is downloaded)."""
    from pathlib import Path

    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists() or path.count("/") != 1:
        raise OSError(f"{path!r} is not a folder holding a timm checkpoint (config.json + model.safetensors)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except ImportError as e:
        raise OSError(f"{path!r} looks like a hub id, but huggingface_hub is not installed to find it") from e
    except Exception as e:  # not in the local cache: never downloaded
        raise OSError(f"{path!r} is not in the local Hugging Face cache ({type(e).__name__}); "
                      f"download it once (huggingface-cli download {path}) or give a local folder") from e  # fmt: skip


class TimmDinov3Features:
    """DINOv3 through timm, the way the Edit-R2 reward server ran it.

    The server loads ``timm/vit_large_patch16_dinov3.lvd1689m`` with transformers' ``AutoModel`` /
    ``AutoImageProcessor``, which wrap timm: the model is ``timm.create_model(architecture,
    pretrained=False, num_classes=0, **model_args)`` with the folder's weights, its tokens are
    ``forward_features`` (CLS, ``num_prefix_tokens - 1`` registers, patches), and each image goes
    through timm's evaluation transform of the folder's ``pretrained_cfg`` (for the real model: resize
    the short side to 256 bicubic, centre crop 256, ImageNet normalisation). This class does the same
    with timm alone, image by image.
    """

    def __init__(self, path: str, device: str = "auto", batch_size: int = 16) -> None:
        import json

        import timm
        import torch
        from timm.data import create_transform, resolve_data_config

        from micebench.judges.backends.detector import _resolve_device

        folder = _timm_dir(path)
        cfg_file = folder / "config.json"
        if not cfg_file.is_file():
            raise OSError(f"{folder}: no config.json (a timm checkpoint folder has config.json and model.safetensors)")
        cfg = json.loads(cfg_file.read_text())
        if "architecture" not in cfg:
            raise OSError(f"{cfg_file}: no 'architecture' key; this is not a timm checkpoint folder")
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
        if weights is None:
            raise OSError(f"{folder}: no model.safetensors or pytorch_model.bin")
        args = {k: v for k, v in (cfg.get("model_args") or {}).items() if k != "num_classes"}
        self.device = _resolve_device(device)
        model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=0, **args)
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        state = {k.removeprefix("timm_model."): v for k, v in state.items()}  # a transformers-saved wrapper
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # num_classes=0: no head
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise OSError(f"{weights}: weights do not fit {cfg['architecture']} "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")  # fmt: skip
        self.model = model.to(self.device).eval()
        self.transform = create_transform(**resolve_data_config(cfg.get("pretrained_cfg") or {}, model=None,
                                                                verbose=False), is_training=False)  # fmt: skip
        self.num_registers = int(getattr(model, "num_prefix_tokens", 1)) - 1
        patch = model.patch_embed.patch_size
        self.patch_size = int(patch if isinstance(patch, int) else patch[0])
        self.batch_size = batch_size
        self.name = str(path)
        import hashlib

        h = hashlib.sha256(cfg_file.read_bytes())
        h.update(f"{weights.name}:{weights.stat().st_size}".encode())
        self.revision = "local:" + h.hexdigest()[:12]
        self._lock = threading.Lock()

    def encode(self, images: list[Any]) -> list[PatchFeatures]:
        import torch

        from micebench.images import as_rgb_image

        out: list[PatchFeatures] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [as_rgb_image(im, "feature input") for im in images[start : start + self.batch_size]]
            with self._lock, torch.no_grad():
                pixels = torch.stack([self.transform(im) for im in chunk]).to(self.device)
                hidden = self.model.forward_features(pixels).float().cpu().numpy()
            h, w = pixels.shape[-2:]
            rows, cols = h // self.patch_size, w // self.patch_size
            first_patch = 1 + self.num_registers
            if hidden.shape[1] != first_patch + rows * cols:
                raise ValueError(f"{self.name}: {hidden.shape[1]} tokens for a {h}x{w} input; expected 1 CLS + "
                                 f"{self.num_registers} registers + {rows}x{cols} patches")  # fmt: skip
            for tokens in hidden.astype(np.float64):
                out.append(PatchFeatures(cls=tokens[0], registers=tokens[1:first_patch],
                                         patches=tokens[first_patch:].reshape(rows, cols, -1),
                                         input_size=(int(h), int(w))))  # fmt: skip
        return out
