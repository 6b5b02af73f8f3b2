"""``--isolate``: the editor runs in a child process that can be killed.

A Python thread cannot be stopped, so without isolation an editor that hangs past ``--turn-timeout``
is abandoned in a daemon thread while the next batch calls ``edit()`` again (two calls at once in one
model). With isolation the editor is built, loaded and called in a child process (``spawn``); a call
that misses its deadline, or a child that dies (segfault, out-of-memory kill, ``os._exit``), kills the
child, the batch becomes error rows, and the next batch starts a fresh child that builds the editor
again.

The price, documented in the README: every request and result is pickled through a pipe (a few
milliseconds per 512x512 image); a restart pays the editor's full load time again (minutes for a 7B
model); and whatever the editor kept in memory between calls (e.g. Edit-R2's per-session contexts) is
lost on a restart and rebuilt from the request's history.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from typing import Any

from micebench.editors.base import Editor
from micebench.errors import SetupError
from micebench.spec import EditRequest, EditResult


class RemoteError(RuntimeError):
    """An exception raised by the editor in the child process. Its message already reads
    "<type>: <message>"; ``remote_type`` is the class name, ``trace`` the child's traceback."""

    def __init__(self, remote_type: str, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.trace = trace


def _describe(e: BaseException) -> tuple[str, str]:
    from micebench.runner import describe_exception

    return type(e).__name__, describe_exception(e)


def _serve(conn: Any, editor_cls: type, options: dict[str, Any], name: str) -> None:
    """The child: build the editor, answer ("edit", requests) and ("close",) until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from micebench.options import build_config

    try:
        editor = editor_cls(build_config(editor_cls.Config, options, where=f"editor {name!r}"))
        editor.name = name
        editor.preflight()
        described = editor.describe()
    except BaseException as e:  # reported to the parent, which stops the run before any work
        conn.send(("setup_error", str(e) if isinstance(e, SetupError) else _describe(e)[1]))
        return
    conn.send(("ready", described))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if msg[0] == "close":
            try:
                editor.close()
                conn.send(("closed", None))
            except BaseException as e:
                conn.send(("raised", *_describe(e), traceback.format_exc()))
            break
        try:
            results = editor.edit(msg[1])
            conn.send(("ok", results))
        except BaseException as e:  # the editor's failure (or an unpicklable result) becomes the parent's error
            try:
                conn.send(("raised", *_describe(e), traceback.format_exc()))
            except (OSError, ValueError):
                break
    conn.close()


class IsolatedEditor(Editor):
    """Runs ``editor_cls(options)`` in a child process; see the module docstring."""

    def __init__(self, editor_cls: type[Editor], options: dict[str, Any], name: str) -> None:
        from micebench.options import build_config

        super().__init__(build_config(editor_cls.Config, options, where=f"editor {name!r}"))
        self.Config = editor_cls.Config
        self.name = name
        self._cls, self._options = editor_cls, options
        self._proc: Any = None
        self._conn: Any = None
        self._described: dict[str, Any] | None = None
        self.restarts = 0  # children started after the first (each one reloads the editor)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited CUDA state or threads
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child, self._cls, self._options, self.name), daemon=True,
                           name=f"micebench-editor-{self.name}")  # fmt: skip
        proc.start()
        child.close()
        if self._proc is not None or self._described is not None:
            self.restarts += 1
        self._proc, self._conn = proc, parent
        try:
            kind, payload = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            self._kill()
            raise SetupError(f"editor {self.name}: its process died while starting (exit code {proc.exitcode})"
                             ) from None
        if kind != "ready":
            self._kill()
            raise SetupError(f"editor {self.name}: {payload}")
        self._described = payload

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(10)

    def preflight(self) -> None:
        """Start the child: it builds the editor and runs its own preflight."""
        if not self._alive():
            self._start()

    def describe(self) -> dict[str, Any]:
        if self._described is None:
            self._start()
        assert self._described is not None
        return self._described

    def edit(self, requests: list[EditRequest]) -> list[EditResult]:
        return self.edit_with_deadline(requests, None)

    def edit_with_deadline(self, requests: list[EditRequest], timeout: float | None) -> list[EditResult]:
        """``edit()`` in the child; past ``timeout`` seconds the child is killed (and restarted next call)."""
        from micebench.runner import EditorTimeout

        if not self._alive():
            self._kill()
            self._start()
        self._conn.send(("edit", requests))
        if not self._conn.poll(timeout):
            pid = self.pid
            self._kill()
            raise EditorTimeout(f"did not return within {timeout:g} s; its process {pid} was killed "
                                "(a new one starts for the next batch)")  # fmt: skip
        try:
            kind, *payload = self._conn.recv()
        except (EOFError, OSError):
            proc = self._proc
            if proc is not None:
                proc.join(5)
            code = proc.exitcode if proc is not None else None
            self._kill()
            raise RuntimeError(f"the editor's process died (exit code {code}); a new one starts for the next "
                               "batch") from None  # fmt: skip
        if kind == "ok":
            return payload[0]
        raise RemoteError(*payload)

    def close(self) -> None:
        """Ask the child to close the editor (up to 60 s), then end it."""
        reply = None
        if self._alive():
            try:
                self._conn.send(("close",))
                reply = self._conn.recv() if self._conn.poll(60) else None
            except (EOFError, OSError):
                reply = None  # the child is gone already: nothing left to close
        self._kill()
        if reply is not None and reply[0] == "raised":
            raise RemoteError(*reply[1:4])
