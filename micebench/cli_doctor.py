"""``micebench doctor``: what this machine has for micebench, and what each adapter needs.

Checks Python and the optional packages, torch and CUDA, free disk space, the Hugging Face Hub
(offline mode, reachability, cache), and Chromium; then lists every registered editor and judge with
what it needs: the adapter's own ``requirements()`` when it declares one (a dict with ``packages``,
``extra``, ``gpu``, ``weights``; a string or list is shown as is), else its path-like options.
Exit code 0, or 1 when a check failed (something installed but broken, an adapter that cannot be
imported); missing optional pieces are reported, not failures.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import click

OPTIONAL = {  # import name -> distribution name
    "torch": "torch", "transformers": "transformers", "open_clip": "open_clip_torch", "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub", "httpx": "httpx",
}  # fmt: skip
MARK = {"ok": "ok     ", "warn": "warn   ", "missing": "missing", "fail": "FAIL   "}


class Report:
    def __init__(self) -> None:
        self.failed = 0

    def line(self, status: str, what: str, detail: str = "") -> None:
        self.failed += status == "fail"
        colour = {"ok": "green", "warn": "yellow", "missing": "yellow", "fail": "red"}[status]
        click.echo(f"  {click.style(MARK[status], fg=colour)}  {what}" + (f": {detail}" if detail else ""))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packages(r: Report) -> None:
    import micebench

    r.line("ok", "python", f"{platform.python_version()} ({platform.platform()})")
    r.line("ok", "micebench", micebench.__version__)
    for module, dist in OPTIONAL.items():
        found = importlib.util.find_spec(module) is not None
        r.line("ok" if found else "missing", module,
               _version(dist) or "installed" if found else "pip install 'micebench[models]'")  # fmt: skip


def _torch(r: Report) -> None:
    if importlib.util.find_spec("torch") is None:
        r.line("missing", "CUDA", "torch is not installed")
        return
    try:
        import torch
    except Exception as e:  # installed but broken (e.g. a CUDA library mismatch)
        r.line("fail", "torch", f"cannot be imported: {type(e).__name__}: {e}")
        return
    if torch.version.cuda is None:
        r.line("warn", "CUDA", f"torch {torch.__version__} is a CPU-only build; model editors need a GPU")
        return
    if not torch.cuda.is_available():
        r.line("warn", "CUDA", f"torch built for CUDA {torch.version.cuda}, but no GPU is visible")
        return
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        r.line("ok", f"CUDA device {i}", f"{p.name}, {p.total_memory / 2**30:.0f} GiB (CUDA {torch.version.cuda})")


def _existing(path: Path) -> Path:
    path = path.expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(r: Report, out: str) -> None:
    from micebench.weights import _hub_cache

    for what, where in (("disk (--out)", Path(out)), ("disk (HF cache)", Path(_hub_cache()))):
        base = _existing(where)
        free = shutil.disk_usage(base).free / 2**30
        writable = os.access(base, os.W_OK)
        status = "fail" if not writable else "warn" if free < 20 else "ok"
        r.line(status, what, f"{base}: {free:.1f} GiB free" + ("" if writable else ", not writable"))


def _hub(r: Report) -> None:
    from micebench.weights import _hub_cache, hub_unreachable

    if importlib.util.find_spec("huggingface_hub") is None:
        r.line("missing", "Hugging Face Hub", "huggingface_hub is not installed; give models as local folders")
        return
    reason = hub_unreachable()
    if reason is None:
        r.line("ok", "Hugging Face Hub", f"reachable; cache {_hub_cache()}")
    else:
        r.line("warn", "Hugging Face Hub", f"offline ({reason}): models must be local folders or already in "
                                           f"the cache {_hub_cache()}")  # fmt: skip


def _chromium(r: Report) -> None:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    r.line("ok" if found else "missing", "chromium",
           found or "only the report's rendering test needs it (apt-get install chromium)")  # fmt: skip


def _rows(kind: str) -> list[tuple[str, str]]:
    from micebench import registry

    out = []
    for row in registry.describe(kind):  # (name, target[, ...]) or a mapping, whatever the registry gives
        if isinstance(row, dict):
            out.append((str(row.get("name", "?")), str(row.get("target") or row.get("value") or "")))
        else:
            out.append((str(row[0]), str(row[1]) if len(row) > 1 else ""))
    return out


# The module that tells whether an extra is installed.
EXTRA_MODULES = {"models": "torch", "diffusers": "diffusers", "api": "httpx", "vlm": "httpx", "ray": "ray",
                 "hf": "datasets"}


def _check_extra(need: str) -> str:
    """``extra NAME`` -> the same text, with ``missing: ...`` and the install command when it is absent."""
    words = need.split()
    if len(words) == 2 and words[0] == "extra" and words[1] in EXTRA_MODULES:
        module = EXTRA_MODULES[words[1]]
        if importlib.util.find_spec(module) is None:
            return f"{need}; missing: {module} (pip install 'micebench[{words[1]}]')"
    return need


def _needs(cls: Any) -> list[str]:
    req = getattr(cls, "requirements", None)
    if callable(req):
        got = req()
        if isinstance(got, str):
            return [got]
        if isinstance(got, dict):
            lines = []
            pkgs = list(got.get("packages") or [])
            if pkgs:
                missing = [p for p in pkgs if importlib.util.find_spec(p) is None]
                extra = f" (pip install 'micebench[{got['extra']}]')" if got.get("extra") and missing else ""
                lines.append("packages " + ", ".join(pkgs) + (f"; missing: {', '.join(missing)}{extra}" if missing
                                                               else ""))  # fmt: skip
            lines += [f"{k}: {v}" for k, v in got.items() if k not in ("packages", "extra") and v]
            return lines
        return [str(x) for x in got]
    declared = getattr(cls, "needs", None)
    if declared is not None:  # the one-line needs an editor declares for `micebench list editors`
        return [_check_extra(str(n)) for n in declared] or ["nothing beyond micebench"]
    fields = getattr(getattr(cls, "Config", None), "model_fields", {})
    paths = [f"{n}=" + ("(required)" if f.is_required() else str(f.default)) for n, f in fields.items()
             if n in ("weights", "checkpoint", "root") or n.endswith(("_path", "_url"))]  # fmt: skip
    return ["options: " + ", ".join(paths)] if paths else ["nothing beyond micebench"]


def _adapters(r: Report, kind: str) -> None:
    from micebench import registry

    for name, target in _rows(kind):
        try:
            cls = registry.load(kind, name)
        except Exception as e:
            r.line("fail", f"{kind[:-1]} {name}", f"cannot be imported from {target}: {type(e).__name__}: {e}")
            continue
        try:
            needs = _needs(cls)
        except Exception as e:  # an adapter's requirements() must not take the doctor down
            needs = [f"requirements() raised {type(e).__name__}: {e}"]
        missing = any("missing:" in n for n in needs)
        r.line("missing" if missing else "ok", f"{kind[:-1]} {name}", "; ".join(needs))


@click.command()
@click.option("--out", default="runs", show_default=True, help="Where runs will be written (for the disk check).")
def doctor(out: str) -> None:
    """Check this machine (torch, CUDA, disk, Hugging Face Hub, chromium) and say what each editor and
    judge needs. Exit code 0, or 1 when a check failed."""
    r = Report()
    sections = (("Python and packages", _packages), ("torch and CUDA", _torch), ("Disk", lambda r: _disk(r, out)),
                ("Hugging Face Hub", _hub), ("Chromium", _chromium),
                ("Editors", lambda r: _adapters(r, "editors")), ("Judges", lambda r: _adapters(r, "judges")))
    for title, check in sections:
        click.secho(title, bold=True)
        check(r)
    if r.failed:
        click.secho(f"{r.failed} check(s) failed", fg="red", err=True)
        raise SystemExit(1)
