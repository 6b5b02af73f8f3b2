"""Shared helpers of the judge tests: fake backends and tiny random models saved to disk.

Fakes identify an image by its top-left pixel (tests draw solid images of distinct colours), so
a test says "in image A, phrase P has these boxes" and "the VLM answers X to template T".
The tiny models are real transformers / open_clip architectures with random weights, written
with ``save_pretrained`` (or open_clip's checkpoint layout) and loaded back by path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from micebench.judges.backends.detector import Detection
from micebench.judges.backends.vlm import VLMError, VLMReply
from micebench.spec import JudgeRequest, Session, Turn

PALETTE = {
    "src": (200, 10, 10),
    "out1": (10, 200, 10),
    "out2": (10, 10, 200),
    "out3": (200, 200, 10),
}


def solid(name: str, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), PALETTE[name])


def image_name(img: Any) -> str:
    px = img.getpixel((0, 0))
    for name, colour in PALETTE.items():
        if tuple(px) == colour:
            return name
    return "?"


def det(x1: float, y1: float, x2: float, y2: float, score: float = 0.9, label: str = "") -> Detection:
    return Detection(box=(x1, y1, x2, y2), score=score, label=label)


class FakeDetector:
    """Boxes from a table {image name: {phrase: [Detection, ...]}}, filtered by the threshold."""

    name = "fake-detector"
    revision = "r0"

    def __init__(self, table: dict[str, dict[str, list[Detection]]]) -> None:
        self.table = table
        self.calls: list[tuple[str, tuple[str, ...], float]] = []

    def detect(self, image: Any, phrases: list[str], threshold: float) -> list[Detection]:
        name = image_name(image)
        self.calls.append((name, tuple(phrases), threshold))
        found = [d for p in phrases for d in self.table.get(name, {}).get(p, []) if d.score >= threshold]
        return sorted(found, key=lambda d: -d.score)


class FakeVLM:
    """Answers from ``answer(prompt, image_names, vote) -> str`` (or raises VLMError); records calls."""

    name = "fake-vlm"
    revision = "v0"

    def __init__(self, answer: Callable[[str, list[str], int], str] | str, finish_reason: str = "stop") -> None:
        self.answer = answer if callable(answer) else (lambda p, i, v, a=answer: a)
        self.finish_reason = finish_reason
        self.calls: list[tuple[str, list[str], int]] = []
        self._lock = threading.Lock()

    def ask(self, images, prompt, *, temperature, max_tokens, vote=0):
        names = [image_name(im) for im in images]
        with self._lock:
            self.calls.append((prompt, names, vote))
        text = self.answer(prompt, names, vote)
        if isinstance(text, VLMReply):
            return text
        return VLMReply(text=text, finish_reason=self.finish_reason)


def failing_vlm(message: str = "server down") -> FakeVLM:
    def fail(p, i, v):
        raise VLMError(message, raw="<html>502</html>")

    return FakeVLM(fail)


def session(turns: list[Turn], subset: str = "cm", sid: str = "s1") -> Session:
    return Session(id=sid, suite="test", subset=subset, source_image="/nonexistent/src.png", turns=tuple(turns))


def turn(task_type: str, formatted: str, instruction: str | None = None, **kw: Any) -> Turn:
    return Turn(instruction=instruction or formatted.replace("[", "").replace("]", ""), task_type=task_type,
                formatted_instruction=formatted, **kw)  # fmt: skip


def request(sess: Session, turn_index: int, size: int = 64) -> JudgeRequest:
    outs = tuple(solid(f"out{k + 1}", size) for k in range(turn_index + 1))
    return JudgeRequest(session=sess, turn_index=turn_index, source_image=solid("src", size), outputs=outs)


# ----- tiny random models saved in the real on-disk layout --------------------------------------


def save_tiny_dinov3(path: Path, hidden: int = 32, registers: int = 4, image_size: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    torch.manual_seed(seed)
    cfg = DINOv3ViTConfig(
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=16,
        num_register_tokens=registers, image_size=image_size,
    )  # fmt: skip
    model = DINOv3ViTModel(cfg).eval()
    model.save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path
