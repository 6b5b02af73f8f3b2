"""Hugging Face datasets out: a suite (MICE format, images inside) or a run (per-turn table + images).

    micebench export mice -S root=DIR --to mice-hf      # loads back with --suite hf:mice-hf
    micebench export runs/<run_id> --to run-hf          # datasets.load_from_disk("run-hf")

Images are stored as the bytes of their files (a suite's JPEGs stay JPEGs; a run's images are
its PNGs), so the pixels read back are exactly the pixels that went in. Rows are streamed to disk
through a generator, so a full MICE-Bench export never holds every image in memory.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from micebench.rundirs import open_run
from micebench.store import RunStoreError
from micebench.suites.base import SuiteData
from micebench.suites.hf import DERIVED_TURN_METADATA

WRITER_BATCH_SIZE = 64  # rows per Arrow write: bounds the images held in memory at once


class ExportError(RuntimeError):
    """An export that cannot be done; the message says why."""


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise ExportError(f"export needs the datasets package: pip install datasets ({e})") from None
    return datasets


def suite_features():
    d = _datasets()
    strings = d.Sequence(d.Value("string"))
    return d.Features({
        "session_id": d.Value("string"),
        "subset": d.Value("string"),
        "suite": d.Value("string"),
        "suite_version": d.Value("string"),
        "session_version": d.Value("string"),
        "image": d.Image(),
        "image_path": d.Value("string"),
        "instruction": strings,
        "task_type": strings,
        "formatted_instruction": strings,
        "bg_consistency": d.Sequence(d.Value("bool")),
        "unchanged_objects": d.Sequence(strings),
        "all_objects": d.Sequence(strings),
        "available_objects": d.Sequence(strings),
        "turns": d.Value("int32"),
        "session_metadata": d.Value("string"),
        "turn_metadata": strings,
    })


def _image_path(session_id: str, source: Path, i: int) -> str:
    """Where the loader will put this image: the session id (unique) with the file's suffix."""
    rel = f"{session_id}{source.suffix.lower() or '.png'}"
    if rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
        rel = f"images/{i}{source.suffix.lower() or '.png'}"
    return rel


def suite_rows(suite: SuiteData) -> Iterator[dict[str, Any]]:
    for i, s in enumerate(suite.sessions):
        src = Path(s.source_image)
        try:
            data = src.read_bytes()
        except OSError as e:
            raise ExportError(f"session {s.id}: cannot read its source image {src} ({e.strerror or e})") from None
        available = [t.metadata.get("available_objects") for t in s.turns]
        extra = [{k: v for k, v in t.metadata.items() if k not in DERIVED_TURN_METADATA} for t in s.turns]
        yield {
            "session_id": s.id,
            "subset": s.subset,
            "suite": suite.name,
            "suite_version": suite.version,
            "session_version": s.version,
            "image": {"bytes": data, "path": None},
            "image_path": _image_path(s.id, src, i),
            "instruction": [t.instruction for t in s.turns],
            "task_type": [t.task_type for t in s.turns],
            "formatted_instruction": [t.formatted_instruction for t in s.turns],
            "bg_consistency": [t.bg_consistency for t in s.turns],
            "unchanged_objects": [list(t.unchanged_objects) for t in s.turns],
            "all_objects": [list(t.all_objects) for t in s.turns],
            # MICE rows have it for every turn or for none; a partial column would not round-trip.
            "available_objects": [list(a) for a in available] if all(a is not None for a in available) else None,
            "turns": len(s.turns),
            "session_metadata": json.dumps(s.metadata, sort_keys=True) if s.metadata else None,
            "turn_metadata": [json.dumps(m, sort_keys=True) if m else None for m in extra]
            if any(extra) else None,
        }


def export_suite(suite: SuiteData, to: str | Path):
    """Write ``suite`` as a dataset in ``to`` (save_to_disk layout) and return it."""
    description = {"micebench": "suite", "suite": suite.name, "version": suite.version, "digest": suite.digest(),
                   "sessions": len(suite.sessions), "source": suite.source}
    return _write(lambda: suite_rows(suite), suite_features(), to, description)


def export_run(run_dir: str | Path, to: str | Path):
    """Write a run's per-turn table, with each turn's input and output image, as a dataset in ``to``."""
    d = _datasets()
    try:
        run = open_run(run_dir)
    except RunStoreError as e:
        raise ExportError(str(e)) from e
    try:
        # The Run API's table, less its absolute image paths (meaningless elsewhere: the images travel inside)
        table = run.turn_table().drop(columns=["input_path", "output_path"], errors="ignore")
        manifest = run.manifest
        image_path = run.image_path
    except ValueError as e:  # the Run API's ResultsError: a table it cannot read
        raise ExportError(str(e)) from e
    finally:
        run.close()
    import pyarrow as pa

    features = d.Features.from_arrow_schema(pa.Schema.from_pandas(table, preserve_index=False))
    features["input_image"] = d.Image()
    features["output_image"] = d.Image()

    def image(digest: str) -> dict[str, Any] | None:
        if not digest:
            return None
        p = image_path(digest)
        if not p.is_file():
            raise ExportError(f"{run_dir}: image {digest} is referenced by the table but missing from images/")
        return {"bytes": p.read_bytes(), "path": None}

    def rows() -> Iterator[dict[str, Any]]:
        for rec in table.to_dict(orient="records"):
            yield {**rec, "input_image": image(rec.get("input_hash") or ""),
                   "output_image": image(rec.get("output_hash") or "")}

    description = {"micebench": "run", "manifest": manifest}
    return _write(rows, features, to, description)


def _write(rows: Callable[[], Iterator[dict[str, Any]]], features, to: str | Path, description: dict[str, Any]):
    d = _datasets()
    out = Path(to)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not empty; export writes a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        ds = d.Dataset.from_generator(
            rows, features=features, cache_dir=str(work / "cache"), writer_batch_size=WRITER_BATCH_SIZE,
            fingerprint=secrets.token_hex(8),
        )
        ds.info.description = json.dumps(description, sort_keys=True, default=str)
        ds.save_to_disk(str(work / "dataset"))
        del ds
        if out.exists():
            out.rmdir()
        (work / "dataset").replace(out)
    except ExportError:
        raise
    except Exception as e:  # datasets wraps our own errors; unwrap so the message names the cause
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ExportError):
            raise cause from None
        raise ExportError(f"writing the dataset to {out} failed: {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return d.load_from_disk(str(out))


def push_to_hub(ds, repo_id: str, private: bool = False) -> str | None:
    """Upload ``ds`` with datasets' ``push_to_hub``; returns the commit URL when the hub gives one."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"--push-to-hub {repo_id!r}: expected ORG/NAME")
    try:
        info = ds.push_to_hub(repo_id, private=private)
    except Exception as e:  # network, auth, quota: one line, the dataset on disk is kept
        raise ExportError(f"push to {repo_id} failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
                          "the dataset is saved locally, push it again later") from None
    return getattr(info, "commit_url", None)
