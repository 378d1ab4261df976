"""Rows into a DuckDB table, upserted by key (``INSERT OR REPLACE`` on a primary key).

The table is created from the first rows (BIGINT, DOUBLE, BOOLEAN or VARCHAR columns, the key
as primary key); every write is one transaction, durable in DuckDB's WAL when it returns.
DuckDB allows one writing process per file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import duckdb

from .base import Row, check_keys, require_key, scalar, sql_type


def _quote(name: str) -> str:
    if '"' in name or "\x00" in name:
        raise ValueError(f"column or table name {name!r} may not contain quotes")
    return f'"{name}"'


class DuckDBSink:
    def __init__(self, path: str | Path, table: str, key: Sequence[str]) -> None:
        self.path = Path(path)
        self.table = table
        self.key = require_key(key, f"the duckdb sink for {table!r}")
        self._db: duckdb.DuckDBPyConnection | None = None
        self._columns: list[str] | None = None
        self._lock = asyncio.Lock()

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        check_keys(rows, self.key)  # nothing is written under a missing or NULL key
        async with self._lock:
            await asyncio.to_thread(self._write, rows)

    def _write(self, rows: Sequence[Row]) -> None:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = duckdb.connect(str(self.path))
        db = self._db
        table = _quote(self.table)
        if self._columns is None:
            first = rows[0]
            columns = list(dict.fromkeys([*self.key, *first]))
            spec = ", ".join(f"{_quote(c)} {sql_type(first.get(c))}" for c in columns)
            keys = ", ".join(map(_quote, self.key))
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec}, PRIMARY KEY ({keys}))")
            self._columns = [r[0] for r in db.execute(f"DESCRIBE {table}").fetchall()]
        for row in rows:
            for column, value in row.items():
                if column not in self._columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {_quote(column)} {sql_type(value)}")
                    self._columns.append(column)
        columns = self._columns
        names = ", ".join(map(_quote, columns))
        marks = ", ".join("?" for _ in columns)
        values = [[scalar(row.get(c)) for c in columns] for row in rows]
        db.execute("BEGIN TRANSACTION")
        try:
            db.executemany(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", values)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a full disk may have ended it already
                db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._columns = None

