"""Rows in a dict by key: the sink tests use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Row, check_keys, row_key


class MemorySink:
    """Rows kept in a dict by key; ``rows`` is there for tests to inspect."""

    def __init__(self, key: Sequence[str] = ()) -> None:
        self.key = list(key)
        self.rows: dict[tuple[Any, ...], Row] = {}
        self.writes = 0

    async def write(self, rows: Sequence[Row]) -> None:
        check_keys(rows, self.key)
        for row in rows:
            self.rows[row_key(row, self.key)] = dict(row)
        self.writes += 1

    async def close(self) -> None:
        return None
