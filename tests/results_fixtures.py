"""Small run directories for the results tests, written without the runner.

``make_run`` writes what the run-directory contract promises (manifest.json, turns.parquet,
turns.csv, images/<sha256>.png) with scores drawn from a seeded generator, so a test can say "a run
whose IF is 0.2 lower than the baseline" and get one.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

TASKS = ("subject_add", "color_alter", "subject_remove", "background_change")
JUDGES = [
    {
        "name": "scene",
        "key": "scene",
        "version": "1",
        "metrics": ["if", "cc", "ga"],
        "config": {"votes": 1},
        "prompt_hash": "",
    }
]


def _png(color: tuple[int, int, int], size: int = 32) -> tuple[str, bytes]:
    img = Image.new("RGB", (size, size), color)
    for x in range(size // 4, size // 2):  # a small square so images are not flat
        for y in range(size // 4, size // 2):
            img.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def default_scores(p_if: float, p_cc: float = 0.8) -> Callable[[np.random.Generator, int, int], dict[str, Any]]:
    """A score function: IF ~ Bernoulli(p_if) (decaying a little with the turn), CC ~ N(p_cc, 0.05), GA = IF chain."""

    def scores(rng: np.random.Generator, s: int, t: int) -> dict[str, Any]:
        return {
            "scene_if": float(rng.random() < p_if - 0.05 * (t - 1)),
            "scene_cc": float(np.clip(rng.normal(p_cc, 0.05), 0, 1)),
            "scene_ga": float(rng.random() < p_if - 0.1 * (t - 1)),
        }

    return scores


def make_run(
    root: Path,
    run_id: str = "run-a",
    *,
    editor: str = "synth-context",
    config_hash: str = "cfg0001",
    n_sessions: int = 12,
    n_turns: int = 3,
    subsets: tuple[str, ...] = ("cm",),
    scores: Callable[[np.random.Generator, int, int], dict[str, Any]] | None = None,
    seed: int = 0,
    suite_version: str = "1",
    judges: list[dict[str, Any]] | None = None,
    instruction: Callable[[int, int], str] | None = None,
    statuses: dict[tuple[int, int, str], tuple[str, str]] | None = None,
    edit_errors: set[tuple[int, int]] = frozenset(),
) -> Path:
    """Write ``root/run_id`` and return its path.

    ``scores(rng, session_index, turn)`` returns {column: value}; ``statuses[(s, t, column)] =
    (status, reason)`` overrides a cell's status (its value becomes NaN unless status is ok);
    ``edit_errors`` holds (session, turn) pairs whose edit failed (no output, metrics not_run).
    """
    run = Path(root) / run_id
    images = run / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scores = scores or default_scores(0.7)
    statuses = statuses or {}
    rows = []
    for s in range(n_sessions):
        subset = subsets[s % len(subsets)]
        sha, data = _png(((40 * s) % 256, 90, 160))
        (images / f"{sha}.png").write_bytes(data)
        prev = sha
        for t in range(1, n_turns + 1):
            text = instruction(s, t) if instruction else f"Add a red ball number {t}"
            row: dict[str, Any] = {
                "suite": "synth",
                "suite_version": suite_version,
                "subset": subset,
                "session_id": f"s{s:03d}",
                "turn": t,
                "task_type": TASKS[(s + t) % len(TASKS)],
                "instruction": text,
                "formatted_instruction": text.replace("red ball", "[red ball]"),
                "effective_instruction": text,
                "status": "ok",
                "error": "",
                "input_hash": prev,
                "output_hash": "",
                "seconds": 0.01,
            }
            values = scores(rng, s, t)
            failed = (s, t) in edit_errors
            if failed:
                row.update(status="error", error="editor raised RuntimeError: out of memory")
            else:
                out, data = _png(((40 * s + 30 * t) % 256, (60 * t) % 256, 100))
                (images / f"{out}.png").write_bytes(data)
                row["output_hash"] = out
                prev = out
            for col, val in values.items():
                status, reason = statuses.get((s, t, col), ("not_run", "edit failed") if failed else ("ok", ""))
                ok = status == "ok"
                row[col] = float(val) if ok else float("nan")
                row[f"{col}_status"] = status
                row[f"{col}_reason"] = reason or (f"judge says {val:.2f}" if ok else "")
                row[f"{col}_votes"] = 1 if ok else 0
            rows.append(row)
    df = pd.DataFrame(rows)
    df.to_parquet(run / "turns.parquet", index=False)
    df.to_csv(run / "turns.csv", index=False)
    metrics = sorted({c[len("scene_") :] for c in df.columns if c.startswith("scene_") and c.count("_") == 1})
    judge_meta = judges if judges is not None else [{**JUDGES[0], "metrics": metrics}]
    manifest = {
        "run_id": run_id,
        "micebench_version": "0.1.0",
        "git_sha": None,
        "python": "3.11",
        "torch": None,
        "created": "2026-11-27T08:00:00Z",
        "finished": "2026-11-27T08:05:00Z",
        "command_line": "micebench run --suite synth",
        "seed": seed,
        "batch_size": 4,
        "turn_timeout": None,
        "suite": {
            "name": "synth",
            "version": suite_version,
            "source": "builtin",
            "options": {},
            "digest": "d" * 64,
            "n_sessions": n_sessions,
        },
        "editor": {"name": editor, "config": {"seed": 0}, "config_hash": config_hash},
        "judges": judge_meta,
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run


FIVE_EDITORS = ("synth-context", "synth-lastturn", "synth-drift", "identity", "oracle")


def pixel_judge_entry() -> dict[str, Any]:
    """The manifest entry of the real pixel judge (its declared metric specs, psnr capped at 100 dB)."""
    from micebench.judges.pixel import PixelJudge

    judge = PixelJudge(PixelJudge.Config())
    return {"name": "pixel", "key": "pixel-0000", "version": "1", "metrics": list(judge.metric_names),
            "config": {"psnr_cap": 100.0}, "prompt_hash": "",
            "metric_specs": [s.model_dump(mode="json") for s in judge.metric_specs()]}


def _scene_and_pixel(p_if: float, identity: bool) -> Callable[[np.random.Generator, int, int], dict[str, Any]]:
    scene = default_scores(p_if)

    def scores(rng: np.random.Generator, s: int, t: int) -> dict[str, Any]:
        out = scene(rng, s, t)
        for ref in ("src", "prev"):
            err = 0.0 if identity else float(abs(rng.normal(0.03 * t, 0.01)))
            ssim = 1.0 if identity else float(np.clip(rng.normal(0.9 - 0.04 * t, 0.03), 0, 1))
            psnr = 100.0 if identity else float(rng.normal(32 - 3 * t, 2))
            out.update({f"pixel_l1_{ref}": err, f"pixel_l2_{ref}": err * err, f"pixel_psnr_{ref}": psnr,
                        f"pixel_ssim_{ref}": ssim})
        return out

    return scores


def five_runs(root: Path, n_sessions: int = 12) -> list[Path]:
    """Five runs of one suite by five editors (IF from strong to weak) scored by the synth suite's default
    judges (scene: IF/CC/GA; pixel: 8 metrics, PSNR at its 100 dB cap for the identity editor), for
    side-by-side report tests."""
    judges = [{**JUDGES[0], "metrics": ["if", "cc", "ga"]}, pixel_judge_entry()]
    return [
        make_run(root, f"run-{i}", editor=e, n_sessions=n_sessions, scores=_scene_and_pixel(0.9 - 0.15 * i,
                                                                                              e == "identity"),
                 seed=i, judges=judges)
        for i, e in enumerate(FIVE_EDITORS)
    ]
