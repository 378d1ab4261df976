"""Many rows per SQLite INSERT statement: ``executemany`` steps, and hands the GIL over and takes
it back, once per row; one statement of many rows does it once."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

__all__ = ["insert_rows", "MOST_PARAMETERS"]

MOST_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # SQLite's limit per statement


@functools.lru_cache(maxsize=256)
def _statement(head: str, width: int, rows: int) -> str:
    marks = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES " + ", ".join([marks] * rows)


def insert_rows(db: sqlite3.Connection, head: str, width: int, values: Sequence[Any], most: int = 256) -> None:
    """``head VALUES (...), (...)`` for ``values`` flat, ``width`` to a row: ``most`` rows per
    statement (within SQLite's limit), then the rest in power-of-two statements, so there are few
    distinct statements and SQLite keeps them prepared."""
    most = max(1, min(most, MOST_PARAMETERS // width))
    start, left = 0, len(values) // width
    while left:
        rows = most if left >= most else 1 << (left.bit_length() - 1)
        db.execute(_statement(head, width, rows), values[start * width:(start + rows) * width])
        start, left = start + rows, left - rows
