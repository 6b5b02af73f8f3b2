"""Executors: where the editor and the judges run while the driver keeps the run's record.

``local`` (the default) runs one editor in this process, one batch after another, exactly as
micebench always has. ``ray`` runs editors and judges as Ray actors (``micebench[ray]``); the
driver stays the single writer of ``run.sqlite`` and ``images/``. Nothing here imports ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSpec:
    """How a run executes; recorded in the manifest under ``executor``."""

    name: Literal["local", "ray"] = "local"
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    address: str | None = None  # an existing Ray cluster; None starts a local one

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ValueError(f"unknown executor {self.name!r}; expected one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ValueError("gpus_per_worker and cpus_per_worker cannot be negative")
        if self.name == "local" and (self.workers != 1 or self.gpus_per_worker or self.address):
            raise ValueError("--workers, --gpus-per-worker and --ray-address need --executor ray")

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, entry: dict[str, Any] | None) -> ExecutorSpec:
        """The spec a manifest recorded; runs made before executors existed ran locally."""
        if not entry:
            return cls()
        known = {k: entry[k] for k in ("name", "workers", "gpus_per_worker", "cpus_per_worker", "address")
                 if k in entry}
        return cls(**known)


def make_executor(spec: ExecutorSpec | None):
    """An executor object for ``spec`` (ray is imported only for ``name == "ray"``)."""
    spec = spec or ExecutorSpec()
    if spec.name == "local":
        from micebench.executors.local import LocalExecutor

        return LocalExecutor()
    try:
        from micebench.executors.ray_executor import RayExecutor
    except ImportError as e:
        from micebench.errors import SetupError

        raise SetupError(f"--executor ray needs Ray: pip install 'micebench[ray]' ({e})") from None
    return RayExecutor(spec)
