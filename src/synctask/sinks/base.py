"""The sink protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..errors import PlanMismatch

Row = Mapping[str, Any]


class Sink(Protocol):
    """Rows in, durably, idempotent by key."""

    async def write(self, rows: Sequence[Row]) -> None:
        """Store ``rows``; return only when they are durable. Same key twice: last one wins."""
        ...

    async def close(self) -> None:
        """Flush anything buffered and release resources."""
        ...


class MissingKey(PlanMismatch, ValueError):
    """Rows without a value for a key column: the sink's key or the records path is wrong."""


def row_key(row: Row, key: Sequence[str]) -> tuple[Any, ...]:
    """The identity of a row: its key columns' values (the whole row when there is no key)."""
    if not key:
        return tuple(sorted(row.items()))
    try:
        values = tuple(row[k] for k in key)
    except KeyError as exc:
        raise MissingKey(f"a row is missing key column {exc.args[0]!r} (its columns: {', '.join(sorted(row))}); "
                         "nothing was written: fix the sink's key, or the dataset's records path") from None
    if None in values:
        column = key[values.index(None)]
        raise MissingKey(f"a row has no value (null) in key column {column!r}; nothing was written: fix the "
                         "sink's key, or the dataset's records path")
    return values


def check_keys(rows: Sequence[Row], key: Sequence[str]) -> None:
    """Refuse the whole batch before anything is written if one row lacks a key value."""
    for column in key:  # (a column at a time: no key tuple built per row)
        for row in rows:
            if row.get(column) is None:
                row_key(row, key)  # raises, naming what is missing


def require_key(key: Sequence[str], what: str) -> list[str]:
    """Every durable sink needs key columns: they are what makes a re-run overwrite, not add."""
    if not key:
        raise ValueError(f"{what} needs key = [...] columns to stay idempotent")
    return list(key)


def scalar(value: Any) -> Any:
    """A value a database column takes as is; anything else (dates, decimals) as its text."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return str(value)


def sql_type(value: Any, *, double: str = "DOUBLE", text: str = "VARCHAR") -> str:
    """The column type for a first value seen (each database names its double and text types)."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return double
    return text
