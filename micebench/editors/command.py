"""The ``command`` editor: any executable edits the images (ComfyUI workflows, other environments).

    micebench run --suite photos --model command -M 'command=[/opt/env/bin/python, edit.py]'

For each call (a batch of turns) the editor makes a fresh folder with ``request.json`` and the input
images as PNG files, runs the command with the request file's path as its last argument (or in
place of ``{request}`` if an argument contains it; also in ``$MICEBENCH_REQUEST``), and reads back
the images. ``request.json``::

    {"version": 1,
     "response": "<folder>/response.json",            # optional for the command to write
     "items": [{"id": "0", "session_id": "...", "turn": 2, "task_type": "...", "subset": "...",
                "instruction": "the user's words for this turn",
                "prompt": "what to do (the instruction after -M context=...)", "context": "chain",
                "images": ["<folder>/inputs/0_turn1.png"], "image_roles": ["turn 1"],
                "source_image": "<folder>/inputs/0_source.png",
                "history": [{"turn": 1, "instruction": "...", "effective_instruction": "...",
                             "image": "<folder>/inputs/0_turn1.png"}],
                "seed": 123, "output": "<folder>/outputs/0.png"}]}

The command either writes each item's image to its ``output`` path, or writes ``response.json`` as
``{"items": [{"id": "0", "image": "path", "effective_instruction": "...", "extra": {...}}, {"id": "1",
"error": "why not"}]}`` (relative paths are relative to the response file). A non-zero exit fails
every turn of the call, with the end of its stderr. After ``timeout_s`` per turn the command's whole
process group is sent SIGTERM, then SIGKILL after ``kill_grace_s``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from micebench.editors.base import Editor
from micebench.editors.context import ContextOptions, SessionContext, TurnPlan, turn_seed
from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult


class CommandConfig(ContextOptions):
    """Options of the command editor."""

    command: list[str] = Field(description="argv list, or one string split as a shell would (no shell runs).")
    timeout_s: float | None = Field(600.0, gt=0, description="Seconds per turn; a call of n turns gets n times this.")
    kill_grace_s: float = Field(5.0, ge=0, description="Between SIGTERM and SIGKILL of the process group.")
    max_batch: int | None = Field(None, ge=1, description="Most turns per call (default: the run's batch).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the command.")
    cwd: Path | None = Field(None, description="Working directory of the command.")
    work_dir: Path | None = Field(None, description="Where the per-call folders go (default: the system's temp).")
    keep_files: bool = Field(False, description="Keep each call's folder (its path is recorded per turn).")
    seed: int = 0

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = shlex.split(v)
        if isinstance(v, list) and not v:
            raise ValueError("command is empty")
        return v


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, n: int = 600) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-n:].replace("\n", " | ")


class CommandEditor(Editor):
    """Runs an executable per batch; see the module docstring for the request and response files."""

    Config = CommandConfig
    description: ClassVar[str] = "any executable: JSON request file in, image paths out (ComfyUI, other envs)"
    needs: ClassVar[tuple[str, ...]] = ("the command and whatever it needs",)

    def __init__(self, config: CommandConfig | None = None, *, vlm: Any = None) -> None:
        super().__init__(config)
        self.context = SessionContext(self.config, editor="command editor", vlm=vlm)
        self._ready = False

    def preflight(self) -> None:
        exe = self.config.command[0]
        found = shutil.which(exe, path=self.config.env.get("PATH", os.environ.get("PATH")))
        if found is None and not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise SetupError(f"command editor: {exe!r} is not an executable (not on PATH, not an executable file)")
        if self.config.cwd is not None and not Path(self.config.cwd).is_dir():
            raise SetupError(f"command editor: cwd {self.config.cwd} is not a folder")
        self.context.preflight()
        self._ready = True

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(self.context.describe())
        return out

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        if not self._ready:
            self.preflight()
        plans = self.context.plan(requests)
        results, todo = self.context.split(plans)
        n = self.config.max_batch or len(todo) or 1
        for k in range(0, len(todo), n):
            group = todo[k : k + n]
            for i, res in zip(group, self._call([requests[i] for i in group], [plans[i] for i in group]),
                              strict=True):  # fmt: skip
                results[i] = res
        return [r if r is not None else EditResult(error="command: no result") for r in results]

    # -- one call ----------------------------------------------------------------------------
    def _write_request(self, folder: Path, reqs: list[EditRequest], plans: list[TurnPlan]) -> dict[str, Any]:
        from micebench.images import as_rgb_image, png_bytes

        inputs, outputs = folder / "inputs", folder / "outputs"
        inputs.mkdir()
        outputs.mkdir()

        def save(img: Any, name: str) -> str:
            path = inputs / f"{name}.png"
            path.write_bytes(png_bytes(as_rgb_image(img, name)))
            return str(path)

        items = []
        for idx, (r, p) in enumerate(zip(reqs, plans, strict=True)):
            paths = {"source": save(r.source_image, f"{idx}_source")}
            for t, img in enumerate(r.history_images):
                paths[f"turn {t + 1}"] = save(img, f"{idx}_turn{t + 1}")
            effective = r.history_effective or r.history_instructions
            items.append({
                "id": str(idx), "session_id": r.session.id, "turn": r.turn_index + 1, "task_type": r.turn.task_type,
                "subset": r.session.subset, "instruction": r.instruction, "prompt": p.instruction,
                "context": self.context.mode, "images": [paths[role] for role in p.roles],
                "image_roles": list(p.roles), "source_image": paths["source"],
                "history": [{"turn": t + 1, "instruction": text, "effective_instruction": effective[t],
                             "image": paths[f"turn {t + 1}"]} for t, text in enumerate(r.history_instructions)],
                "seed": turn_seed(self.config.seed, r.session.id, r.turn_index),
                "output": str(outputs / f"{idx}.png"),
            })  # fmt: skip
        request = {"version": 1, "response": str(folder / "response.json"), "items": items}
        (folder / "request.json").write_text(json.dumps(request, indent=1))
        return request

    def _argv(self, request_path: Path) -> list[str]:
        argv = list(self.config.command)
        if any("{request}" in a for a in argv):
            return [a.replace("{request}", str(request_path)) for a in argv]
        return [*argv, str(request_path)]

    def _call(self, reqs: list[EditRequest], plans: list[TurnPlan]) -> list[EditResult]:
        c = self.config
        if c.work_dir is not None:
            Path(c.work_dir).mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="micebench-command-", dir=c.work_dir))
        start = time.perf_counter()
        try:
            request = self._write_request(folder, reqs, plans)
            failure = self._run(folder, len(reqs))
            seconds = (time.perf_counter() - start) / len(reqs)
            extra_call = {"command_folder": str(folder)} if c.keep_files else {}
            if failure is not None:
                return [EditResult(error=f"command: {failure}", extra={**p.extra, **extra_call}, seconds=seconds)
                        for p in plans]  # fmt: skip
            return self._read_back(folder, request, plans, seconds, extra_call)
        finally:
            if not c.keep_files:
                shutil.rmtree(folder, ignore_errors=True)

    def _run(self, folder: Path, n: int) -> str | None:
        """Run the command; None when it exited 0, else why not."""
        c = self.config
        env = {**os.environ, **c.env, "MICEBENCH_REQUEST": str(folder / "request.json")}
        timeout = c.timeout_s * n if c.timeout_s else None
        with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
            try:
                proc = subprocess.Popen(self._argv(folder / "request.json"), stdout=out, stderr=err, env=env,
                                        cwd=c.cwd, start_new_session=True)  # fmt: skip
            except OSError as e:
                return f"cannot start {c.command[0]!r}: {e}"
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
                return (f"timed out after {timeout:g} s ({n} turns x {c.timeout_s:g} s); its process group was "
                        f"killed; stderr: {_tail(folder / 'stderr.txt')}")  # fmt: skip
        if rc != 0:
            return f"exited with status {rc}; stderr: {_tail(folder / 'stderr.txt')}"
        return None

    def _kill_group(self, proc: subprocess.Popen) -> None:
        """SIGTERM the command's process group; SIGKILL whatever is left after the grace period."""
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            return
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.kill_grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # The leader may have exited on SIGTERM while its children linger: the whole group goes.
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()

    def _read_back(self, folder: Path, request: dict, plans: list[TurnPlan], seconds: float,
                   extra_call: dict) -> list[EditResult]:  # fmt: skip
        from micebench.images import BadImageError, load_image

        response_path = Path(request["response"])
        answers: dict[str, dict] = {}
        if response_path.is_file():
            try:
                data = json.loads(response_path.read_text())
                answers = {str(a["id"]): a for a in data["items"] if isinstance(a, dict) and "id" in a}
            except (ValueError, KeyError, TypeError) as e:
                msg = f"command: response.json is not {{'items': [{{'id': ...}}]}}: {type(e).__name__}: {e}"
                return [EditResult(error=msg, extra={**p.extra, **extra_call}, seconds=seconds) for p in plans]
        out = []
        for item, plan in zip(request["items"], plans, strict=True):
            extra = {**plan.extra, **extra_call}
            ans = answers.get(item["id"], {})
            if ans.get("error"):
                out.append(EditResult(error=f"command: {str(ans['error'])[:1000]}", extra=extra, seconds=seconds))
                continue
            path = Path(ans["image"]) if ans.get("image") else Path(item["output"])
            if not path.is_absolute():
                path = response_path.parent / path
            if not path.is_file():
                out.append(EditResult(error=f"command: no image for item {item['id']} (looked for {path})",
                                      extra=extra, seconds=seconds))  # fmt: skip
                continue
            try:
                img = load_image(path, f"command output for item {item['id']}")
            except BadImageError as e:
                out.append(EditResult(error=f"command: {e}", extra=extra, seconds=seconds))
                continue
            if isinstance(ans.get("extra"), dict):
                extra = {**extra, "command": ans["extra"]}
            effective = ans.get("effective_instruction") or plan.instruction
            out.append(EditResult(image=img, effective_instruction=str(effective), extra=extra, seconds=seconds))
        return out
