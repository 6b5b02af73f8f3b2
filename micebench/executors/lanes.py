"""Lanes: a few producer threads whose items are consumed, one at a time, by the caller's thread.

The Ray executor runs one lane per worker (each lane drives one remote editor or judge through
turn-synchronous batches) and yields their results to the runner, which alone writes the store.
A lane that raises stops the others and the error reaches the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_ITEM, _DONE, _ERROR = "item", "done", "error"


def run_lanes(lanes: Sequence[Callable[[], Iterable[T]]], name: str = "micebench-lane") -> Iterator[T]:
    """Run each lane (a callable returning an iterable) in its own thread; yield items as they come.

    A lane may compute its next item while its previous one waits to be consumed (the caller's
    commit overlaps the lane's next remote call), but no further: at most one finished and one
    unfinished item per lane exist at a time, and nothing new is handed over after the caller stops.
    """
    if not lanes:
        return
    out: queue.Queue[tuple[str, int, Any]] = queue.Queue()
    credit = [threading.Semaphore(1) for _ in lanes]  # one handed-over item per lane not yet consumed
    stop = threading.Event()

    def drive(i: int, lane: Callable[[], Iterable[T]]) -> None:
        try:
            for item in lane():
                credit[i].acquire()
                if stop.is_set():
                    return
                out.put((_ITEM, i, item))
        except BaseException as e:  # handed to the caller, which raises it
            out.put((_ERROR, i, e))
            return
        out.put((_DONE, i, None))

    threads = [threading.Thread(target=drive, args=(i, lane), name=f"{name}-{i}", daemon=True)
               for i, lane in enumerate(lanes)]
    for th in threads:
        th.start()
    running = len(threads)
    try:
        while running:
            kind, i, payload = out.get()
            if kind == _ERROR:
                raise payload
            if kind == _DONE:
                running -= 1
                continue
            yield payload
            credit[i].release()
    finally:
        stop.set()
        for sem in credit:
            sem.release()


def partition(items: Sequence[Any], n: int, weight: Callable[[Any], float] = lambda _: 1.0) -> list[list[Any]]:
    """Split ``items`` into at most ``n`` non-empty parts of balanced total weight, deterministically
    (heaviest first to the lightest part, ties to the lowest index); each part keeps the input order."""
    n = max(1, min(n, len(items)))
    order = sorted(range(len(items)), key=lambda i: (-weight(items[i]), i))
    loads = [0.0] * n
    owner = [0] * len(items)
    for i in order:
        k = min(range(n), key=lambda j: (loads[j], j))
        owner[i] = k
        loads[k] += weight(items[i])
    return [[items[i] for i in range(len(items)) if owner[i] == k] for k in range(n)]
