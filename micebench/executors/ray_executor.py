"""The Ray executor: editors and judges as Ray actors, the driver as the run's only writer.

Edit phase: the sessions are split into ``workers`` parts of balanced turn counts; each part is
one *lane*, a driver thread that walks its sessions through turn-synchronous batches exactly as
the local executor does, but calls a remote editor actor instead of a local editor. Requests
(with their images) are built by the driver from the store, results come back to the driver,
which writes images and rows as they arrive: ``run.sqlite`` and ``images/`` have one writer, so
``kill -9`` of the driver and ``--resume`` behave as in a local run.

A worker process that dies is restarted by Ray (``max_restarts``) and its call is retried
(``max_task_retries``); a batch that kills its worker every time becomes an ``error`` row like a
batch that raises, and is then retried request by request. Judge phase: one judge actor per worker
(per GPU with ``--gpus-per-worker 1``), batches handed out to whichever is free. The editor actors
are gone before the judge actors start, so a GPU holds one model at a time.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import ray
from ray.exceptions import RayTaskError

from micebench.errors import SetupError
from micebench.executors import ExecutorSpec
from micebench.executors.lanes import partition, run_lanes

#: Ray restarts a dead worker process this often over a run (-1: without limit) ...
MAX_RESTARTS = -1
#: ... and retries the call that was running on it this often before the batch counts as failed.
MAX_TASK_RETRIES = 3
CONNECT_TIMEOUT_S = 5.0
READY_NOTICE_S = 60.0


class _EditorWorker:
    """Runs in a Ray worker process: one editor, built from its registered name and options."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        from micebench.editors.base import create_editor

        self.editor = create_editor(name, options)
        check = getattr(self.editor, "preflight", None)
        if callable(check):  # load the model / reach the server now: a failure is a setup error, before work
            check()

    def ready(self) -> tuple[int, dict[str, Any]]:
        import os

        return os.getpid(), self.editor.describe()

    def edit(self, requests: list, timeout: float | None) -> list:
        from micebench.runner import call_with_timeout

        return call_with_timeout(self.editor.edit, requests, timeout)

    def close(self) -> None:
        self.editor.close()


class _JudgeWorker:
    """Runs in a Ray worker process: one judge, built from its name and options."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        from micebench.judges.base import create_judge

        self.judge = create_judge(name, options)

    def ready(self) -> tuple[int, str]:
        import os

        return os.getpid(), self.judge.key

    def score(self, requests: list) -> list:
        return self.judge.score(requests)

    def close(self) -> None:
        self.judge.close()


def _unwrap(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; an exception raised inside the actor is re-raised here as itself (same type and
    message as in a local run), so error rows and unscored reasons read the same whatever ran them."""
    try:
        return fn()
    except RayTaskError as e:
        cause = e.cause
        if isinstance(cause, BaseException):
            raise cause from None
        raise


class _EditorLane:
    """The driver's handle on one editor actor, shaped like an Editor."""

    def __init__(self, actor: Any, settings_timeout: float | None) -> None:
        self.actor = actor
        self.turn_timeout = settings_timeout

    def edit(self, requests: list) -> list:
        timeout = self.turn_timeout * len(requests) if self.turn_timeout else None
        return _unwrap(lambda: ray.get(self.actor.edit.remote(requests, timeout)))


class RayEditorPool:
    """``n`` editor actors; ``lanes[i]`` drives actor i. Built by :meth:`RayExecutor.make_editor`."""

    def __init__(self, spec: ExecutorSpec, name: str, options: dict[str, Any], n: int,
                 turn_timeout: float | None) -> None:
        self.actors, ready = _start_actors(_EditorWorker, (name, options), n, spec, f"editor {name!r}")
        self.lanes = [_EditorLane(a, turn_timeout) for a in self.actors]
        self.pids = [pid for pid, _ in ready]
        self._describe = ready[0][1]

    def describe(self) -> dict[str, Any]:
        return self._describe

    def close(self) -> None:
        _close_actors(self.actors)
        self.actors = []


class _JudgeLane:
    """The driver's handle on one judge actor: the driver's own judge object for everything but scoring."""

    def __init__(self, judge: Any, actor: Any) -> None:
        self._judge = judge
        self.actor = actor

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._judge, attr)

    def score(self, requests: list) -> list:
        return _unwrap(lambda: ray.get(self.actor.score.remote(requests)))


class RayJudgePool:
    def __init__(self, spec: ExecutorSpec, judge: Any, n: int) -> None:
        options = judge.config.model_dump(mode="python")
        self.actors, ready = _start_actors(_JudgeWorker, (judge.name, options), n, spec, f"judge {judge.name!r}")
        for _, key in ready:
            if key != judge.key:
                self.close()
                raise SetupError(f"judge {judge.name!r} is configured differently on the Ray workers (key {key}, "
                                 f"here {judge.key}): do the workers run the same micebench?")
        self.pids = [pid for pid, _ in ready]
        self.lanes = [_JudgeLane(judge, a) for a in self.actors]

    def close(self) -> None:
        _close_actors(self.actors)
        self.actors = []


def _start_actors(worker: type, args: tuple, n: int, spec: ExecutorSpec, what: str) -> tuple[list, list]:
    """Start ``n`` restartable actors of ``worker(*args)`` and wait until each is built; one that cannot be
    built closes them all and is a SetupError naming ``what``."""
    cls = ray.remote(worker).options(
        num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker,
        max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES,
    )
    actors = [cls.remote(*args) for _ in range(n)]
    try:
        return actors, _await_ready(actors, what, spec)
    except RayTaskError as e:
        _close_actors(actors)
        cause = e.cause if isinstance(e.cause, BaseException) else e
        raise SetupError(f"{what} could not be built on a Ray worker: "
                         f"{type(cause).__name__}: {_first_line(cause)}") from None
    except ray.exceptions.RayActorError as e:
        _close_actors(actors)
        raise SetupError(f"{what} could not be built on a Ray worker: {_actor_failure(e)}") from None


def _await_ready(actors: list, what: str, spec: ExecutorSpec) -> list:
    """Wait until every actor is built; say so on the console, once a minute, while Ray cannot place them
    (a busy cluster) or they are still loading (a large model), instead of waiting silently."""
    refs = [a.ready.remote() for a in actors]
    waited = 0
    while True:
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=READY_NOTICE_S)
        if not pending:
            return ray.get(refs)
        waited += READY_NOTICE_S
        print(f"micebench: {len(done)} of {len(refs)} Ray workers for {what} ready after {waited:.0f} s "
              f"(each needs {spec.cpus_per_worker:g} CPU, {spec.gpus_per_worker:g} GPU); still waiting",
              file=sys.stderr, flush=True)


def _close_actors(actors: list) -> None:
    """Let each actor free its model, then end it (its resources return to the cluster)."""
    if not actors:
        return
    try:
        ray.get([a.close.remote() for a in actors], timeout=60)
    except Exception as e:  # a dead or hung actor is killed below all the same
        logging.getLogger(__name__).warning("closing Ray workers: %s", _first_line(e))
    for a in actors:
        ray.kill(a, no_restart=True)


def _actor_failure(e: BaseException) -> str:
    """Why an actor died: for a constructor that raised, the exception's own last line
    ("RuntimeError: no weights at ..."), which Ray only gives inside a traceback."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(getattr(e, "error_msg", "") or e))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if getattr(e, "actor_init_failed", False):
        for ln in reversed(lines):
            if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln):
                return ln
    return lines[0] if lines else type(e).__name__


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class RayExecutor:
    """``--executor ray``: see the module docstring."""

    name = "ray"

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec
        self._started_ray = False
        self._lanes_wanted = spec.workers

    # -- setup --------------------------------------------------------------------
    def setup(self) -> None:
        """Join (or start) Ray and check the cluster can hold the workers; raises SetupError in seconds."""
        if not ray.is_initialized():
            address = self.spec.address
            if address and address != "auto":
                _check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                         configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise SetupError(f"cannot start or join {where}: {_first_line(e)}") from None
            self._started_ray = True
        have = ray.cluster_resources()
        for kind, per in (("GPU", self.spec.gpus_per_worker), ("CPU", self.spec.cpus_per_worker)):
            need = per * self.spec.workers
            if need > have.get(kind, 0.0) + 1e-9:
                flag = "--gpus-per-worker" if kind == "GPU" else "cpus per worker"
                raise SetupError(
                    f"--workers {self.spec.workers} x {flag} {per:g} needs {need:g} {kind}s, but the Ray cluster "
                    f"has {have.get(kind, 0.0):g}; use fewer workers"
                )

    def describe(self) -> dict[str, Any]:
        return {**self.spec.to_manifest(), "ray_version": ray.__version__}

    def close(self) -> None:
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    # -- edit phase ---------------------------------------------------------------
    def make_editor(self, name: str, options: dict[str, Any], build: Callable[[], Any] | None = None) -> RayEditorPool:
        """Editor actors, each building the editor from its registered name (or module:Class) and options;
        ``build`` (the local way) is not used."""
        return RayEditorPool(self.spec, name, options, self._lanes_wanted, self._turn_timeout)

    def edit_stream(self, runner, sessions: Sequence, records: dict, editor_factory: Callable[[], Any]) -> Iterator:
        """One lane per part of the sessions, each over its own editor actor; records as they come."""
        parts = partition(list(sessions), self.spec.workers, weight=lambda s: len(s.turns))
        self._lanes_wanted = len(parts)
        self._turn_timeout = runner.settings.turn_timeout
        pool: list[RayEditorPool] = []
        failed: list[BaseException] = []
        lock = threading.Lock()

        def editor_for(i: int) -> Callable[[], Any]:
            def get() -> Any:
                with lock:  # the first lane with work builds every actor, once; a failure is not retried
                    if failed:
                        raise failed[0]
                    if not pool:
                        try:
                            pool.append(editor_factory())
                        except BaseException as e:
                            failed.append(e)
                            raise
                return pool[0].lanes[i]

            return get

        def lane(i: int, part: list) -> Callable[[], Iterator]:
            ids = {s.id for s in part}
            mine = {k: v for k, v in records.items() if k[0] in ids}
            return lambda: runner.edit_sessions(part, mine, editor_for(i))

        try:
            yield from run_lanes([lane(i, p) for i, p in enumerate(parts)], name="micebench-edit")
        finally:
            if pool:
                pool[0].close()

    _turn_timeout: float | None = None

    # -- judge phase --------------------------------------------------------------
    def judge_stream(self, runner, judge, batches: Sequence[list], records: dict) -> Iterator[tuple[int, list]]:
        """Batches to whichever judge actor is free; (turns, judgements) as they come."""
        if not batches:
            return
        pool = RayJudgePool(self.spec, judge, min(self.spec.workers, len(batches)))
        todo = iter(list(batches))
        lock = threading.Lock()

        def next_batch() -> list | None:
            with lock:
                return next(todo, None)

        def lane(j: Any) -> Callable[[], Iterator]:
            def run() -> Iterator[tuple[int, list]]:
                while (batch := next_batch()) is not None:
                    yield len(batch), runner._judge_batch(j, batch, records)

            return run

        try:
            yield from run_lanes([lane(j) for j in pool.lanes], name="micebench-judge")
        finally:
            pool.close()


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when a cluster address does not answer (ray.init would retry for long)."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise SetupError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise SetupError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); "
                         f"is the Ray head running (`ray start --head`)?") from None
