"""The one error type of the results package (kept apart so every module can raise it without cycles)."""


class ResultsError(ValueError):
    """A run directory or per-turn table that the results tools cannot use; the message says why."""
