"""``--suite hf:NAME_OR_PATH``: a MICE-format suite stored as a Hugging Face dataset.

One row per session: the MICE per-turn list columns (``instruction``, ``task_type``,
``formatted_instruction``, ``bg_consistency``, ``unchanged_objects``, ``all_objects``, optionally
``available_objects``) and an ``image`` column of the ``Image`` feature. Optional columns written
by ``micebench export``: ``session_id``, ``subset``, ``image_path``, ``suite``, ``suite_version``,
``session_version``, ``session_metadata`` and ``turn_metadata`` (JSON text). Rows are checked by
the same code, with the same messages, as the JSONL loader; ``where`` is ``hf:NAME[split] row N``.

A local folder written by ``save_to_disk`` is read with ``load_from_disk``; any other local path or
a hub name goes through ``load_dataset``. A hub that cannot be reached is noticed in seconds
(one connection attempt) and the load falls back to the local cache, failing with one line if
the dataset is not there; ``HF_HUB_OFFLINE=1`` skips the attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from micebench.suites.base import SuiteData, SuiteError
from micebench.suites.mice_jsonl import PER_TURN_FIELDS, SUITE_VERSION, _session

PREFIX = "hf:"
HUB_PROBE_TIMEOUT_S = 3.0
EXPORT_COLUMNS = ("session_id", "subset", "image_path", "suite", "suite_version", "session_version",
                  "session_metadata", "turn_metadata")
#: Turn metadata the JSONL reader derives itself; export leaves it out of ``turn_metadata``.
DERIVED_TURN_METADATA = ("invalid", "available_objects")


def load_hf_suite(spec: str, options: dict[str, Any] | None = None) -> SuiteData:
    """Load ``hf:NAME_OR_PATH``; options: ``split``, ``subset`` (when the rows have no subset column),
    ``name`` (suite name when the rows do not carry one), ``resize`` (``N`` or ``none``: the source resize that
    the ``mice`` suite applies, overriding what the rows carry; a MICE export carries the 512 x 512 of upstream)."""
    options = dict(options or {})
    target = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    split = options.pop("split", None)
    subset_opt = options.pop("subset", None)
    name_opt = options.pop("name", None)
    resize = _resize_option(options.pop("resize"), spec) if "resize" in options else _KEEP
    if options:
        raise SuiteError(f"{spec}: suite options {sorted(options)} are not understood "
                         f"(known: split, subset, name, resize)")
    if not target:
        raise SuiteError("--suite hf:NAME_OR_PATH: give a dataset folder or a hub name after 'hf:'")
    ds, split = _open(target, split, spec)
    suite = _sessions(ds, spec, split, subset_opt, name_opt)
    return suite if resize is _KEEP else _with_resize(suite, resize)


_KEEP = object()


def _resize_option(value: Any, spec: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "false", "no")):
        return None
    try:
        side = int(value)
    except (TypeError, ValueError):
        side = 0
    if side < 16 or str(side) != str(value).strip():
        raise SuiteError(f"{spec}: -S resize={value!r}: give a side length of at least 16, or none")
    return side


def _with_resize(suite: SuiteData, resize: int | None) -> SuiteData:
    """The same sessions with every source resized to ``resize`` x ``resize`` (None: as stored)."""
    from micebench.suites.mice_jsonl import resize_options

    sessions = []
    for s in suite.sessions:
        meta = {k: v for k, v in (s.metadata or {}).items() if k != "source_resize"}
        if resize is not None:
            meta["source_resize"] = [resize, resize]
        sessions.append(s.model_copy(update={"metadata": meta}))
    return SuiteData(name=suite.name, version=suite.version, sessions=tuple(sessions), source=suite.source,
                     options={**suite.options, **resize_options(resize)})


# -- opening ------------------------------------------------------------------------------
def _open(target: str, split: str | None, spec: str):
    try:
        import datasets
    except ImportError as e:
        raise SuiteError(f"{spec}: reading Hugging Face datasets needs `pip install datasets` ({e})") from None
    path = Path(target)
    try:
        if path.exists():
            if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
                loaded = datasets.load_from_disk(str(path))
            else:
                loaded = datasets.load_dataset(str(path))
        elif path.is_absolute() or target.startswith((".", "~")) or target.count("/") > 1:
            raise SuiteError(f"{spec}: no such file or folder (a hub name is NAME or ORG/NAME)")
        else:
            loaded = _load_from_hub(datasets, target, spec)
    except SuiteError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise SuiteError(f"{spec}: cannot load the dataset: {_one_line(e)}") from None
    return _pick_split(datasets, loaded, split, spec)


def _load_from_hub(datasets, name: str, spec: str):
    offline = _offline_requested(datasets)
    why = None
    if not offline:
        endpoint = os.environ.get("HF_ENDPOINT") or getattr(datasets.config, "HF_ENDPOINT", "https://huggingface.co")
        why = hub_unreachable(endpoint, HUB_PROBE_TIMEOUT_S)
        if why:
            why = f"cannot reach {endpoint} ({why})"
    if offline or why:
        with _offline_mode(datasets):
            try:
                return datasets.load_dataset(name)
            except Exception as e:  # any failure here is "not in the cache"; the reason is in the message
                state = why or "offline mode is on (HF_HUB_OFFLINE)"
                raise SuiteError(f"{spec}: {state} and the dataset is not in the local Hugging Face cache "
                                 f"({type(e).__name__}); give a local folder (hf:PATH) or connect") from None
    return datasets.load_dataset(name)


def _offline_requested(datasets) -> bool:
    env = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
              for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return env or bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


@contextlib.contextmanager
def _offline_mode(datasets):
    """Offline mode for one load (datasets and huggingface_hub read these flags when they run)."""
    mods = [datasets.config]
    try:
        import huggingface_hub.constants as hub_constants

        mods.append(hub_constants)
    except ImportError:
        pass
    saved = [(m, getattr(m, "HF_HUB_OFFLINE", None)) for m in mods]
    for m in mods:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, v in saved:
            m.HF_HUB_OFFLINE = v


def hub_unreachable(endpoint: str, timeout: float) -> str | None:
    """None when a TCP connection to the hub opens within ``timeout`` seconds (name lookup included),
    else why not. One attempt, no retries."""
    parsed = urlparse(endpoint)
    host = parsed.hostname
    if not host:
        return f"bad endpoint {endpoint!r}"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    box: dict[str, str | None] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                box["why"] = None
        except OSError as e:
            box["why"] = e.strerror or str(e) or type(e).__name__

    th = threading.Thread(target=attempt, daemon=True, name="micebench-hub-probe")
    th.start()
    th.join(timeout)
    if th.is_alive():
        return f"no answer within {timeout:g} s"
    return box.get("why", "no answer")


def _pick_split(datasets, loaded, split: str | None, spec: str):
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None:
            if len(names) == 1:
                split = names[0]
            elif "test" in names:
                split = "test"
            else:
                raise SuiteError(f"{spec}: the dataset has splits {', '.join(names)}; choose one with -S split=NAME")
        if split not in loaded:
            raise SuiteError(f"{spec}: no split {split!r} (splits: {', '.join(names)})")
        return loaded[split], split
    if split is not None and str(getattr(loaded, "split", None) or "") not in ("", split):
        raise SuiteError(f"{spec}: the dataset holds split {loaded.split!r}, not {split!r}")
    return loaded, str(getattr(loaded, "split", None) or "train")


# -- rows to sessions ------------------------------------------------------------------------
def _sessions(ds, spec: str, split: str, subset_opt: str | None, name_opt: str | None) -> SuiteData:
    import datasets

    cols = set(ds.column_names)
    missing = [c for c in ("image", "instruction", *PER_TURN_FIELDS) if c not in cols]
    if missing:
        raise SuiteError(f"{spec}[{split}]: missing column {missing[0]!r} (columns: {', '.join(sorted(cols))})")
    if not isinstance(ds.features["image"], datasets.Image):
        raise SuiteError(f"{spec}[{split}]: column 'image' is {ds.features['image']!r}, not the Image feature")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    if len(ds) == 0:
        raise SuiteError(f"{spec}[{split}]: no sessions")
    folder = _image_folder(ds, spec, split)
    sessions = []
    seen: dict[str, int] = {}
    names: set[tuple[str, str]] = set()
    for i, row in enumerate(ds):
        where = f"{spec}[{split}] row {i + 1}"
        subset = row.get("subset") or subset_opt or ""
        suite_name = row.get("suite") or name_opt or spec
        names.add((suite_name, row.get("suite_version") or (SUITE_VERSION if "suite" not in cols else "1")))
        rel = _materialise(row, i, folder, where)
        obj = {k: row[k] for k in ("instruction", *PER_TURN_FIELDS) if k in row}
        if row.get("available_objects") is not None:  # optional: a null cell means the row has none
            obj["available_objects"] = row["available_objects"]
        obj["image"] = rel
        session = _session(obj, where, subset, suite_name, [folder])
        session = _restore(session, row, where)
        if session.id in seen:
            raise SuiteError(f"{where}: session id {session.id!r} repeats row {seen[session.id]}")
        seen[session.id] = i + 1
        sessions.append(session)
    if len(names) > 1:
        raise SuiteError(f"{spec}[{split}]: rows name more than one suite: {sorted(names)}")
    suite_name, version = names.pop()
    return SuiteData(name=suite_name, version=version, sessions=tuple(sessions), source=spec,
                     options={"split": split})


def _image_folder(ds, spec: str, split: str) -> Path:
    from micebench.suites.yaml_suite import cache_dir

    key = hashlib.sha256(f"{spec}\0{split}\0{getattr(ds, '_fingerprint', '')}".encode()).hexdigest()[:16]
    folder = cache_dir() / "hf" / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _materialise(row: dict[str, Any], i: int, folder: Path, where: str) -> str:
    """Write the row's image bytes under ``folder`` (once) and return its path relative to it."""
    img = row.get("image")
    if not isinstance(img, dict) or (not img.get("bytes") and not img.get("path")):
        raise SuiteError(f"{where}: field 'image' is empty")
    data = img.get("bytes")
    if not data:
        src = Path(img["path"])
        if not src.is_file():
            raise SuiteError(f"{where}: field 'image' refers to {src}, which does not exist")
        data = src.read_bytes()
    rel = row.get("image_path") or img.get("path") or ""
    rel = str(rel).replace("\\", "/")
    if not rel or Path(rel).is_absolute():
        rel = f"images/row-{i + 1}{Path(rel).suffix or _suffix(data)}"
    dest = folder / rel
    try:
        dest.resolve().relative_to(folder.resolve())
    except ValueError:
        raise SuiteError(f"{where}: field 'image_path': {rel!r} escapes the image folder") from None
    if not dest.is_file() or dest.read_bytes() != data:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return rel


def _suffix(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def _restore(session, row: dict[str, Any], where: str):
    """Apply the optional columns ``micebench export`` writes (id, version, metadata)."""
    update: dict[str, Any] = {}
    sid = row.get("session_id")
    if sid is not None:
        if not isinstance(sid, str) or not sid:
            raise SuiteError(f"{where}: field 'session_id' must be a non-empty string")
        update["id"] = sid
    if row.get("session_version"):
        update["version"] = str(row["session_version"])
    if row.get("session_metadata"):
        update["metadata"] = _json(row["session_metadata"], where, "session_metadata")
    extra = row.get("turn_metadata")
    if extra:
        if not isinstance(extra, list) or len(extra) != len(session.turns):
            raise SuiteError(f"{where}: field 'turn_metadata' has {len(extra) if isinstance(extra, list) else '?'} "
                             f"entries, 'instruction' has {len(session.turns)}")
        update["turns"] = tuple(
            t.model_copy(update={"metadata": {**t.metadata, **_json(m, where, f"turn_metadata[{k}]")}})
            if m else t for k, (t, m) in enumerate(zip(session.turns, extra, strict=True)))
    if not update:
        return session
    try:
        return type(session).model_validate({**session.model_dump(), **update})
    except ValueError as e:
        raise SuiteError(f"{where}: {_one_line(e)}") from None


def _json(text: Any, where: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise SuiteError(f"{where}: field {field!r} is not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: field {field!r} must be a JSON object")
    return value


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
