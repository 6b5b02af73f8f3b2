"""Open-vocabulary detection: the :class:`Detector` interface and GroundingDINO via transformers.

Boxes are ``(x1, y1, x2, y2)`` normalised to [0, 1] of the image they were found in; a
detector returns them sorted by score, highest first. ``IDEA-Research/grounding-dino-tiny`` is
the transformers port of SwinT-OGC, the detector MICE-Bench uses; any local directory written
by ``save_pretrained`` works too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Detection:
    """One detected box: normalised corners, confidence, the phrase it matched, and its place in the
    detector's own (query) order, which ``protocol=upstream`` keeps (lists here are sorted by score)."""

    box: tuple[float, float, float, float]
    score: float
    label: str = ""
    index: int = 0

    @property
    def center(self) -> tuple[float, float]:
        """Normalised centre (x, y)."""
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)

    def pixel_center(self, width: int, height: int) -> tuple[int, int]:
        """Centre in whole pixels of a ``width`` x ``height`` image (truncated, as upstream does)."""
        cx, cy = self.center
        return (int(cx * width), int(cy * height))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when they do not overlap."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    if ix2 <= ix1 or iy2 <= iy1:
        return 0.0
    inter = (ix2 - ix1) * (iy2 - iy1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@runtime_checkable
class Detector(Protocol):
    """Finds boxes of the given phrases in an image, at a box (= text) threshold."""

    name: str
    revision: str

    def detect(self, image: Any, phrases: list[str], threshold: float) -> list[Detection]:
        """All boxes scoring at least ``threshold`` for any of ``phrases``, best first."""
        ...


class CachedDetector:
    """Wraps a detector with an in-memory LRU cache keyed by (image hash, phrases, threshold).

    Votes of a turn ask the same questions of the same images; detection is deterministic, so
    it runs once. Thread-safe.
    """

    def __init__(self, inner: Detector, size: int = 512) -> None:
        self.inner = inner
        self.name = inner.name
        self.revision = inner.revision
        self._cache: OrderedDict[tuple, list[Detection]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self.calls = 0

    def detect(self, image: Any, phrases: list[str], threshold: float) -> list[Detection]:
        from micebench.images import image_hash

        key = (image_hash(image), tuple(phrases), round(float(threshold), 6))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        found = self.inner.detect(image, phrases, threshold)
        with self._lock:
            self.calls += 1
            self._cache[key] = found
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return found


def model_revision(path: str, model: Any) -> str:
    """Which weights were loaded: the hub commit when known, else a digest of a local directory's
    config and weight files (names, sizes, and the config's bytes), else ""."""
    import hashlib
    from pathlib import Path

    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return str(commit)
    d = Path(path)
    if not d.is_dir():
        return ""
    h = hashlib.sha256()
    for f in sorted(d.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt") or f.name == "config.json"):
            h.update(f.name.encode() + str(f.stat().st_size).encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
    return "local:" + h.hexdigest()[:12]


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class GroundingDinoDetector:
    """GroundingDINO through ``transformers`` (``AutoProcessor`` + ``GroundingDinoForObjectDetection``).

    The phrases are lowercased, stripped of dots and joined as ``"a . b ."`` (the caption format
    GroundingDINO was trained on). Box threshold and text threshold are the same number.
    Calls are serialised by a lock: one model, many judge threads.
    """

    def __init__(self, path: str, device: str = "auto") -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        self.device = _resolve_device(device)
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = GroundingDinoForObjectDetection.from_pretrained(path).to(self.device).eval()
        except OSError as e:
            raise OSError(
                f"cannot load GroundingDINO from {path!r}: {e}. Give a local directory written by "
                "save_pretrained or a hub id available offline (e.g. IDEA-Research/grounding-dino-tiny)."
            ) from e
        self.name = str(path)
        self.revision = model_revision(path, self.model)
        self._lock = threading.Lock()

    @staticmethod
    def caption(phrases: list[str]) -> str:
        cleaned = [p.strip().lower().replace(".", "") for p in phrases if p.strip()]
        return " . ".join(cleaned) + " ."

    def detect(self, image: Any, phrases: list[str], threshold: float) -> list[Detection]:
        import torch

        from micebench.images import as_rgb_image

        if not phrases or not any(p.strip() for p in phrases):
            return []
        img = as_rgb_image(image, "detector input")
        with self._lock, torch.no_grad():
            inputs = self.processor(images=img, text=self.caption(phrases), return_tensors="pt").to(self.device)
            outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=threshold, text_threshold=threshold
            )[0]
        labels = result["text_labels"] if "text_labels" in result else result.get("labels", [])
        found = []
        rows = zip(result["boxes"].tolist(), result["scores"].tolist(), labels, strict=True)
        for i, (box, score, label) in enumerate(rows):
            # Not clipped to [0, 1]: upstream's IoU and large-box tests see the raw box.
            found.append(Detection(box=tuple(float(v) for v in box), score=float(score), label=str(label), index=i))
        found.sort(key=lambda d: -d.score)
        return found
