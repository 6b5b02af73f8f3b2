"""micebench: an evaluation harness for multi-turn in-context image editing.

Importing this package is cheap: torch, transformers and open_clip are imported only
inside the adapters that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
