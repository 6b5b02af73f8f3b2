"""micebench: an evaluation harness for multi-turn in-context image editing.

Importing this package is cheap: torch, transformers and open_clip are imported only inside the
adapters that need them, and the Python API below is imported on first use::

    import micebench
    run = micebench.run(suite="synth", editors="oracle", judges=["scene"], out="runs")
    print(micebench.summary(run, fmt="markdown"))
    micebench.open_run(run.root).turns()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved by __getattr__ so `import micebench` stays light
_LAZY = {
    "run": "micebench.api",
    "score": "micebench.api",
    "resume": "micebench.api",
    "summary": "micebench.api",
    "compare": "micebench.api",
    "open_run": "micebench.results.run",
    "Run": "micebench.results.run",
    "RunManifest": "micebench.results.run",
    "MetricSpec": "micebench.spec",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'micebench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
