"""Helpers for judges that encode a batch's distinct images (or texts) once."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class UniqueItems:
    """Collects items, giving each distinct one a slot; ``items`` is what to encode, in slot order.

    Images are keyed by the content hash the runner passes (``JudgeRequest.output_hashes``), or by
    object identity when there is none, so the source image shared by a session's turns is encoded once.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._slots: dict[Hashable, int] = {}

    def slot(self, item: Any, key: Hashable | None = None) -> int:
        k = key if key else ("id", id(item))
        if k not in self._slots:
            self._slots[k] = len(self.items)
            self.items.append(item)
        return self._slots[k]

    def __len__(self) -> int:
        return len(self.items)
