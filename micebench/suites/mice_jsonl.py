"""Loader for MICE-Bench / EdiVal ``test_metadata.jsonl`` files.

One JSON object per line and session; list fields hold one entry per turn (see
``shared/mice-bench/PROTOCOL.md``). Image paths are relative to the subset folder (or to
``--image-root``). Every problem is reported with file, line and field.

``resize``: the size every source image is resized to (LANCZOS, no crop) before the editor sees it
and before any judge scores it, as the authors' data loader does (512 x 512 in MICE-Bench). It
travels with each session as ``metadata["source_resize"]`` and is applied when the runner loads the
source (:func:`micebench.images.load_source`), so the stored source of a run is the resized image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from micebench.spec import TASK_TYPES, Session, Turn
from micebench.suites.base import Suite, SuiteConfig, SuiteData, SuiteError, resolve_inside
from micebench.suites.validate import check_image_header, check_mice_row_types, decode_line, loads_json

METADATA_FILE = "test_metadata.jsonl"
PER_TURN_FIELDS = ("task_type", "formatted_instruction", "bg_consistency", "unchanged_objects", "all_objects")
SUITE_VERSION = "mice-1"
UPSTREAM_SIZE = 512  # flow_grpo/edival_dataset.py: resolution=512, LANCZOS, no crop


def find_metadata(path: Path) -> Path:
    if path.is_dir():
        cand = path / METADATA_FILE
        if not cand.is_file():
            raise SuiteError(f"{path}: folder has no {METADATA_FILE}")
        return cand
    return path


def load_mice_jsonl(
    path: str | Path,
    image_root: Path | None = None,
    subset: str | None = None,
    suite_name: str = "mice",
    check_images: bool = True,
    resize: int | None = None,
) -> SuiteData:
    """Load a MICE/EdiVal JSONL file (or a folder holding ``test_metadata.jsonl``).

    ``subset`` defaults to the name of the file's folder (``cm`` or ``cu`` in MICE-Bench).
    With ``check_images`` every source image must exist; the error lists how many are missing.
    ``resize``: a side length; each session's source is then resized to ``resize`` x ``resize``.
    """
    file = find_metadata(Path(path))
    if not file.is_file():
        raise SuiteError(f"{file}: no such file")
    folder = file.parent
    subset = subset if subset is not None else folder.name
    bases = [folder] + ([image_root / subset, image_root] if image_root is not None else [])
    sessions: list[Session] = []
    seen: dict[str, int] = {}
    missing: list[str] = []
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = decode_line(raw, file, lineno)
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            obj = loads_json(line, where)
            session = _session(obj, where, subset, suite_name, bases, resize)
            if session.id in seen:
                raise SuiteError(f"{where}: session id {session.id!r} repeats line {seen[session.id]}")
            seen[session.id] = lineno
            if check_images and not Path(session.source_image).is_file():
                missing.append(f"{obj['image']} (line {lineno})")
            elif check_images:
                check_image_header(session.source_image, f"{where}: field 'image'")
            sessions.append(session)
    if not sessions:
        raise SuiteError(f"{file}: no sessions")
    if missing:
        first = "\n  ".join(missing[:5])
        looked = ", ".join(str(b) for b in bases)
        raise SuiteError(
            f"{file}: {len(missing)} of {len(sessions)} source images are missing (looked in {looked}); first:\n  "
            f"{first}\nMICE-Bench distributes its images separately: unpack them and pass --image-root DIR."
        )
    return SuiteData(name=suite_name, version=SUITE_VERSION, sessions=tuple(sessions), source=str(file),
                     options={"subset": subset, **resize_options(resize)})


def resize_options(resize: int | None) -> dict[str, Any]:
    """What the manifest records about the source resize."""
    if resize is None:
        return {"resize": "none"}
    return {"resize": resize, "source_size": [resize, resize], "resample": "lanczos"}


def _session(obj: Any, where: str, subset: str, suite_name: str, bases: list[Path], resize: int | None = None
             ) -> Session:  # fmt: skip
    if not isinstance(obj, dict):
        raise SuiteError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("image", "instruction", *PER_TURN_FIELDS):
        if key not in obj:
            raise SuiteError(f"{where}: missing field {key!r}")
    instructions = obj["instruction"]
    if not isinstance(instructions, list) or not instructions:
        raise SuiteError(f"{where}: field 'instruction' must be a non-empty list")
    n = len(instructions)
    for key in PER_TURN_FIELDS:
        if not isinstance(obj[key], list) or len(obj[key]) != n:
            got = len(obj[key]) if isinstance(obj[key], list) else type(obj[key]).__name__
            raise SuiteError(f"{where}: field {key!r} has {got} entries, 'instruction' has {n}")
    check_mice_row_types(obj, where, n)
    if "turns" in obj and obj["turns"] != n:
        raise SuiteError(f"{where}: field 'turns' is {obj['turns']} but there are {n} instructions")
    if not isinstance(obj["image"], str) or not obj["image"]:
        raise SuiteError(f"{where}: field 'image' must be a non-empty string")
    image = resolve_inside(bases, obj["image"], f"{where}: field 'image'")
    turns = []
    for t in range(n):
        if obj["task_type"][t] not in TASK_TYPES:
            raise SuiteError(
                f"{where}: field 'task_type'[{t}]: unknown task type {obj['task_type'][t]!r} "
                f"(expected one of {', '.join(TASK_TYPES)})"
            )
        meta: dict[str, Any] = {}
        formatted = obj["formatted_instruction"][t]
        if obj["task_type"][t] == "text_change" and "'[]'" in str(formatted):
            # Upstream defect (PROTOCOL.md section 6): an empty text target can never pass.
            meta["invalid"] = "text_change with an empty '[]' target; this turn cannot be followed"
        if "available_objects" in obj and isinstance(obj["available_objects"], list) and t < len(
            obj["available_objects"]
        ):
            meta["available_objects"] = obj["available_objects"][t]
        try:
            turns.append(
                Turn(
                    instruction=instructions[t],
                    task_type=obj["task_type"][t],
                    formatted_instruction=formatted,
                    unchanged_objects=tuple(obj["unchanged_objects"][t]),
                    all_objects=tuple(obj["all_objects"][t]),
                    bg_consistency=obj["bg_consistency"][t],
                    metadata=meta,
                )
            )
        except (ValidationError, TypeError) as e:
            raise SuiteError(f"{where}: turn {t + 1}: {_first_error(e)}") from e
    sid = f"{subset}/{Path(obj['image']).stem}" if subset else Path(obj["image"]).stem
    meta = {"source_resize": [resize, resize]} if resize is not None else {}
    return Session(id=sid, suite=suite_name, subset=subset, source_image=str(image), turns=tuple(turns),
                   metadata=meta)


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        return f"field {'.'.join(str(x) for x in err['loc'])!r}: {err['msg']}"
    return str(e)


def find_subsets_folder(root: Path, subsets: tuple[str, ...]) -> Path:
    """The folder holding the subset folders: ``root`` itself, or ``root/dataset`` (the authors' checkout)."""
    for cand in (root, root / "dataset"):
        if all((cand / s / METADATA_FILE).is_file() for s in subsets):
            return cand
    want = ", ".join(f"{s}/{METADATA_FILE}" for s in subsets)
    raise SuiteError(f"suite 'mice': {root} holds neither {want} nor dataset/{{{','.join(subsets)}}}/ (the Edit-R2 "
                     "checkout's layout)")  # fmt: skip


class MiceSuite(Suite):
    """MICE-Bench: ``-S root=DIR`` where DIR is the Edit-R2 authors' checkout (holding ``dataset/cm`` and
    ``dataset/cu``) or a folder holding ``cm/`` and ``cu/`` (each with test_metadata.jsonl and, unless
    ``--image-root`` says otherwise, ``source_image/``). ``-S subset=cm|cu|both``. ``root`` defaults to
    ``$MICEBENCH_MICE_ROOT``. Sources are resized to 512 x 512 (LANCZOS) as upstream does;
    ``-S resize=none`` keeps them as they are, ``-S resize=N`` gives N x N."""

    class Config(SuiteConfig):
        root: Path | None = Field(default=None, description="Edit-R2 checkout, or a folder with cm/ and cu/.")
        subset: Literal["cm", "cu", "both"] = "both"
        check_images: bool = True
        resize: int | None = Field(default=UPSTREAM_SIZE, ge=16, description="Source side after resize; none: off.")

        @field_validator("resize", mode="before")
        @classmethod
        def _none(cls, v: Any) -> Any:
            return None if isinstance(v, str) and v.strip().lower() in ("none", "off", "false", "no") else v

    def load(self, image_root: Path | None = None) -> SuiteData:
        import os

        root = self.config.root or (Path(os.environ["MICEBENCH_MICE_ROOT"]) if os.environ.get("MICEBENCH_MICE_ROOT")
                                    else None)
        if root is None:
            raise SuiteError("suite 'mice': say where MICE-Bench is with -S root=DIR (the Edit-R2 checkout, or a "
                             "folder holding cm/ and cu/) or $MICEBENCH_MICE_ROOT")
        subsets = ("cm", "cu") if self.config.subset == "both" else (self.config.subset,)
        folder = find_subsets_folder(Path(root).expanduser(), subsets)
        parts = [load_mice_jsonl(folder / s, image_root, subset=s, suite_name="mice",
                                 check_images=self.config.check_images, resize=self.config.resize) for s in subsets]
        return SuiteData(name="mice", version=SUITE_VERSION, sessions=tuple(x for p in parts for x in p.sessions),
                         source=str(folder), options={"subset": self.config.subset,
                                                      **resize_options(self.config.resize)})
