"""Errors shared by the whole harness (kept tiny: importing it imports nothing heavy)."""

from __future__ import annotations


class SetupError(RuntimeError):
    """A problem with the setup that stops the run before any work (a model that cannot load, a
    server that cannot be reached, a missing extra, a judge that fails on every turn the same way).

    The message is one line a user can act on; the CLI prints it and exits 2.
    """
