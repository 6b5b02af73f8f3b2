"""Errors shared across the package."""

from __future__ import annotations


class SetupError(RuntimeError):
    """A problem with the setup that stops the run before any work; the CLI prints it on one line and exits 2."""
