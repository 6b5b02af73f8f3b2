"""Shards and merge: one suite split over several machines without Ray, then joined again.

``micebench run --shard K/N`` keeps the sessions whose id hashes to K (a deterministic rule that
needs no coordination: every SLURM array task computes its own part). Each shard is an ordinary
run directory whose manifest says which shard it is, of which suite, and where its sessions sit
in the full suite. ``micebench merge RUN... -o RUN`` checks that the shards belong together and
cover the suite exactly once, then writes one run directory whose table equals an unsharded run's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from micebench.rundirs import RunDir, copy_records, create_run, export_table, is_run_dir, link_images, open_run
from micebench.store import RunStoreError
from micebench.suites.base import SuiteData

SHARD_RULE = "sha256(session_id) mod N"


class ShardError(ValueError):
    """Shards that cannot be made or merged; the message says what is wrong and with which run."""


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ShardError(f"--shard {text!r}: expected K/N, e.g. 2/8")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ShardError(f"--shard {text}: K must be between 1 and N (shards are numbered from 1)")
    return k, n


def shard_of(session_id: str, n: int) -> int:
    """The shard (1..n) a session belongs to: the same on every machine and Python version."""
    digest = hashlib.sha256(session_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def shard_suite(suite: SuiteData, k: int, n: int) -> tuple[SuiteData, dict[str, Any]]:
    """The part of ``suite`` that shard ``k`` of ``n`` runs, and what its manifest records about it."""
    positions = [i for i, s in enumerate(suite.sessions) if shard_of(s.id, n) == k]
    part = SuiteData(suite.name, suite.version, tuple(suite.sessions[i] for i in positions), suite.source,
                     suite.options)
    info = {
        "index": k,
        "count": n,
        "rule": SHARD_RULE,
        "suite_digest": suite.digest(),
        "suite_sessions": len(suite.sessions),
        "positions": positions,  # where this shard's sessions sit in the full suite, in order
    }
    return part, info


# -- merge ----------------------------------------------------------------------------
def merge_runs(paths: list[str | Path], out: str | Path, command_line: str = "") -> Path:
    """Check the shards in ``paths`` and join them into a new run directory ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ShardError(f"{out} already exists; merge writes a new run directory")
    if not paths:
        raise ShardError("give the shards' run directories")
    runs: list[RunDir] = []
    try:
        for p in paths:
            if not is_run_dir(p):
                raise ShardError(f"{p} is not a micebench run directory (no manifest.json or run.sqlite)")
            try:
                runs.append(open_run(p))
            except RunStoreError as e:
                raise ShardError(str(e)) from e
        runs.sort(key=lambda r: (r.manifest.get("shard") or {}).get("index", 0))
        order = check_shards(runs)
        return _write_merged(runs, order, out, command_line)
    finally:
        for r in runs:
            r.close()


def check_shards(runs: list[RunDir]) -> list:
    """Raise :class:`ShardError` unless ``runs`` are every shard of one run, each finished; return the
    sessions in the full suite's order."""
    for r in runs:
        if not r.manifest.get("shard"):
            raise ShardError(f"{r.root} is not a shard (it was not run with --shard K/N)")
    first = runs[0]
    n = first.manifest["shard"]["count"]
    for r in runs[1:]:
        _same(first, r, "shard count (N)", lambda m: m["shard"]["count"])
        _same(first, r, "suite (name, version, content hash of all its sessions)",
              lambda m: (m["suite"]["name"], m["suite"]["version"], m["shard"]["suite_digest"]))
        _same(first, r, "suite options", lambda m: m["suite"].get("options"))
        _same(first, r, "editor (name and options)", lambda m: (m["editor"]["name"], m["editor"].get("config")))
        _same(first, r, "judges (names and configuration keys)",
              lambda m: sorted((j["name"], j.get("key")) for j in m.get("judges", [])))
        for key in ("seed", "batch_size", "turn_timeout", "micebench_version"):
            _same(first, r, key, lambda m, key=key: m.get(key))
    described = {r.root: r.manifest["editor"].get("config_hash") for r in runs if "describe" in r.manifest["editor"]}
    if len(set(described.values())) > 1:
        listing = ", ".join(f"{root} ({h})" for root, h in described.items())
        raise ShardError(f"shards do not match: the editor described itself differently (config hash): {listing}")

    seen = Counter(r.manifest["shard"]["index"] for r in runs)
    twice = sorted(k for k, c in seen.items() if c > 1)
    if twice:
        dup = [str(r.root) for r in runs if r.manifest["shard"]["index"] in twice]
        raise ShardError(f"overlapping shards: shard {', '.join(f'{k}/{n}' for k in twice)} given more than once "
                         f"({', '.join(dup)})")
    owner: dict[str, Path] = {}
    for r in runs:
        for s in r.sessions:
            if s.id in owner:
                raise ShardError(f"overlapping shards: session {s.id!r} is in both {owner[s.id]} and {r.root}")
            owner[s.id] = r.root
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        raise ShardError(f"incomplete: shard {', '.join(f'{k}/{n}' for k in missing)} missing; give every shard's "
                         f"run directory (got {len(runs)} of {n})")
    for r in runs:
        _check_finished(r)
    total = first.manifest["shard"]["suite_sessions"]
    placed: dict[int, Any] = {}
    for r in runs:
        pos = r.manifest["shard"]["positions"]
        if len(pos) != len(r.sessions):
            raise ShardError(f"{r.root}: manifest places {len(pos)} sessions, the record holds {len(r.sessions)}")
        for p, s in zip(pos, r.sessions, strict=True):
            placed[p] = s
    if sorted(placed) != list(range(total)):
        raise ShardError(f"incomplete: the shards hold {len(placed)} of the suite's {total} sessions")
    ordered = [placed[i] for i in range(total)]
    got = SuiteData(first.manifest["suite"]["name"], first.manifest["suite"]["version"], tuple(ordered)).digest()
    if got != first.manifest["shard"]["suite_digest"]:
        raise ShardError("the shards' sessions together do not hash to the suite they were cut from "
                         f"(got {got[:12]}, manifests say {first.manifest['shard']['suite_digest'][:12]}): "
                         "a session changed after sharding")
    return ordered


def _same(a: RunDir, b: RunDir, what: str, get) -> None:
    try:
        va, vb = get(a.manifest), get(b.manifest)
    except (KeyError, TypeError) as e:
        raise ShardError(f"shards do not match: {what} is missing from a manifest ({e})") from e
    if va != vb:
        raise ShardError(f"shards do not match: {what} differs: {a.root} has {_short(va)}, {b.root} has {_short(vb)}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 160 else text[:157] + "..."


def _check_finished(r: RunDir) -> None:
    pending = r.total_turns - len(r.records)
    if pending or not r.manifest.get("finished"):
        state = f"{pending} of {r.total_turns} turns not edited" if pending else "it did not finish"
        raise ShardError(f"{r.root}: shard not finished ({state}); finish it with `micebench run --resume {r.root}`")
    keys = {j.get("key") for j in r.manifest.get("judges", [])}
    unjudged = keys - r.judged_keys()
    if unjudged and any(rec.status == "ok" for rec in r.records.values()):
        raise ShardError(f"{r.root}: shard not finished (judge {', '.join(sorted(unjudged))} has scored nothing); "
                         f"finish it with `micebench run --resume {r.root}`")


def _write_merged(runs: list[RunDir], sessions: list, out: Path, command_line: str) -> Path:
    first = runs[0].manifest
    editor = next((r.manifest["editor"] for r in runs if "describe" in r.manifest["editor"]), first["editor"])
    counts: Counter[str] = Counter()
    for r in runs:
        counts.update(r.manifest.get("counts") or {})
    manifest = {
        **{k: v for k, v in first.items() if k != "shard"},
        "run_id": out.name,
        "created": min(r.manifest.get("created") or "" for r in runs),
        "finished": max(r.manifest.get("finished") or "" for r in runs),
        "command_line": command_line or first.get("command_line", ""),
        "suite": {**first["suite"], "digest": first["shard"]["suite_digest"], "n_sessions": len(sessions)},
        "editor": editor,
        "counts": dict(counts),
        "shard": None,
        "merged_from": [
            {"run_id": r.manifest.get("run_id"), "path": str(r.root), "shard": f"{r.manifest['shard']['index']}/"
             f"{r.manifest['shard']['count']}", "executor": r.manifest.get("executor"),
             "git_sha": r.manifest.get("git_sha"), "created": r.manifest.get("created"),
             "finished": r.manifest.get("finished")}
            for r in runs
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final place, then renamed: an interrupted merge leaves no half-made run directory.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        target = create_run(tmp / "run", manifest, sessions)
        try:
            copy_records(target, runs)
            link_images(target, runs)
            export_table(target)
        finally:
            target.close()
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp / "run", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
