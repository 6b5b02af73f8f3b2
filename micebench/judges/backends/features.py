"""Patch features: the :class:`FeatureExtractor` interface and DINOv3 ViT via transformers.

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

    def __init__(
        self, path: str, device: str = "auto", batch_size: int = 16, allow_random_weights: bool = False
    ) -> None:
        from micebench.judges.backends.detector import _resolve_device, model_revision, transformers_classes
        from micebench.weights import load_pretrained, load_processor

        AutoImageProcessor, AutoModel = transformers_classes("DINOv3 features", "AutoImageProcessor", "AutoModel")
        self.device = _resolve_device(device)
        try:
            self.processor = load_processor(AutoImageProcessor, path, "DINOv3 features")
            model, partly_random = load_pretrained(AutoModel, path, "DINOv3 features",
                                            allow_random_weights=allow_random_weights)  # fmt: skip
            self.model = model.to(self.device).eval()
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
        self.revision = ("random-weights+" if partly_random else "") + model_revision(path, self.model)
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
