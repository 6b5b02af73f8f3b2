"""The registered ``synth`` suite: procedurally generated MICE-style sessions with exact ground truth.

Options (``-S key=value``): ``size`` (image side, default 256), ``subset`` (cm, cu or both), ``turns``
(per session, default 3), ``n`` (sessions per subset, default 20), ``seed`` (default 0). Source images
are rendered into a cache folder (``$MICEBENCH_CACHE/synth/<options hash>/`` or
``~/.cache/micebench/synth/<options hash>/``) so that ``Session.source_image`` is a real file; the same
options give byte-identical images and specs on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from micebench.images import png_bytes
from micebench.spec import Session, Turn
from micebench.suites.base import Suite, SuiteConfig, SuiteData
from micebench.synth import scene
from micebench.synth.sessions import GENERATOR_VERSION, generate_session


def cache_root() -> Path:
    base = os.environ.get("MICEBENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "micebench") / "synth"


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_session(seed: int, subset: str, index: int, turns: int, size: int, image_dir: Path) -> Session:
    """Generate one session and render its source image into ``image_dir``."""
    data = generate_session(seed, subset, index, turns, size)
    path = image_dir / f"{data['id']}.png"
    _write_if_changed(path, png_bytes(scene.render(data["source"])))
    turns_t = tuple(
        Turn(instruction=t["instruction"], task_type=t["task_type"], formatted_instruction=t["formatted_instruction"],
             unchanged_objects=tuple(t["unchanged_objects"]), all_objects=tuple(t["all_objects"]),
             bg_consistency=t["bg_consistency"], metadata=t["metadata"])
        for t in data["turns"]
    )
    meta = {"source": data["source"], "rule": data["rule"], "generator": GENERATOR_VERSION, "seed": seed,
            "index": index}
    return Session(id=data["id"], suite="synth", subset=subset, source_image=str(path), turns=turns_t,
                   metadata=meta, version=GENERATOR_VERSION)


class SynthSuite(Suite):
    """Synthetic scenes (shapes, colours, materials, counts, text) with MICE-Bench's nine task types."""

    class Config(SuiteConfig):
        size: int = Field(default=256, ge=128, le=2048, description="Image side in pixels (a multiple of 4).")
        subset: Literal["cm", "cu", "both"] = Field(default="both", description="cm, cu or both.")
        turns: int = Field(default=3, ge=1, le=20, description="Turns per session.")
        n: int = Field(default=20, ge=1, le=100000, description="Sessions per subset.")
        seed: int = Field(default=0, description="Generator seed.")

        @model_validator(mode="after")
        def _size_fits_grid(self) -> SynthSuite.Config:
            if self.size % 4:
                raise ValueError(f"size {self.size} is not a multiple of 4 (the scene grid)")
            return self

    def options_hash(self) -> str:
        blob = json.dumps({**self.config.model_dump(mode="json"), "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load(self, image_root: Path | None = None) -> SuiteData:
        cfg = self.config
        image_dir = cache_root() / self.options_hash()
        subsets = ("cm", "cu") if cfg.subset == "both" else (cfg.subset,)
        sessions = tuple(
            build_session(cfg.seed, sub, i, cfg.turns, cfg.size, image_dir) for sub in subsets for i in range(cfg.n)
        )
        return SuiteData(name="synth", version=GENERATOR_VERSION, sessions=sessions, source="registered:synth",
                         options=cfg.model_dump(mode="json"))
