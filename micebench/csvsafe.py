"""CSV cells that a spreadsheet will not run as formulas (CSV injection), and their exact reversal.

Every CSV micebench writes goes through :func:`cell` (or :func:`frame` for a DataFrame); every CSV
it reads back goes through :func:`restore` (or :func:`restore_frame`). Parquet files keep the raw
text: only CSV is opened by spreadsheets.

The rule, for text cells:

- A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a
  leading apostrophe (``=HYPERLINK(...)`` becomes ``'=HYPERLINK(...)``), the convention spreadsheets
  themselves use for "this is text".
- Numbers are numbers, not formulas: a cell that is a plain decimal number (optional sign, digits,
  optional fraction and exponent, or ``inf``/``nan``), such as ``-0.5`` or ``+3`` or ``-1e-05``, is
  written as is. Spreadsheets read it as a number and micebench's readers get exactly the text back,
  so published scores round-trip unchanged.
- So that the apostrophe can be removed again without guessing, a text that already begins with
  apostrophes followed by one of those characters gets one more apostrophe. :func:`restore` removes
  exactly one apostrophe from a cell that begins with apostrophes followed by one of those characters,
  and leaves every other cell alone: ``restore(cell(x)) == x`` for every string ``x``.
"""

from __future__ import annotations

import re
from typing import Any

#: First characters that make a spreadsheet treat a cell as a formula (or hide one behind whitespace).
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|nan)", re.IGNORECASE)


def is_number(text: str) -> bool:
    """True for a plain decimal number as pandas and Python write them (``-0.5``, ``1e-05``, ``-inf``)."""
    return _NUMBER.fullmatch(text) is not None


def _quoted_trigger(text: str) -> bool:
    """Apostrophes followed by a trigger character (a cell :func:`cell` escaped, or must escape)."""
    rest = text.lstrip("'")
    return rest != text and rest.startswith(TRIGGERS)


def cell(value: Any) -> Any:
    """``value`` made safe for a CSV cell; anything that is not a string is returned unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(TRIGGERS):
        return value if is_number(value) else "'" + value
    if value.startswith("'") and _quoted_trigger(value):
        return "'" + value
    return value


def restore(value: Any) -> Any:
    """The original text of a cell written by :func:`cell`; anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith("'") and _quoted_trigger(value):
        return value[1:]
    return value


def row(values: list[Any]) -> list[Any]:
    """Every cell of a row through :func:`cell`."""
    return [cell(v) for v in values]


def _is_text(dtype) -> bool:
    import pandas as pd

    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def frame(df):
    """A copy of a pandas DataFrame whose text cells and column names went through :func:`cell`.

    Numeric columns are untouched (pandas writes them as numbers); only object and string columns
    are looked at.
    """
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if _is_text(col.dtype):
            out[name] = col.map(cell)
    out.columns = [cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def restore_frame(df):
    """A DataFrame read from a CSV written through :func:`frame`/:func:`row`, with the original text back."""
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if _is_text(col.dtype):
            out[name] = col.map(restore)
    out.columns = [restore(c) if isinstance(c, str) else c for c in out.columns]
    return out
