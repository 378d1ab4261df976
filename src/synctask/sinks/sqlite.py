"""Rows into a SQLite table, upserted by key; the writes of tasks that finish together share one
committed transaction (``GroupCommit``), made on the event loop."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..disk import rollback_quietly
from ..upsert import insert_rows
from .base import Row, check_keys, require_key, scalar
from .group import GroupCommit, WouldWait

_AS_IS = {str, int, float, type(None)}  # the usual values, taken without a call per value
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another writer's lock (on a thread)


class SQLiteSink:
    """Creates the table from the first rows' columns; a unique index on the key makes re-runs
    overwrite instead of duplicate. A commit is a write to the page cache (WAL, ``synchronous=NORMAL``:
    durable once the process is gone, not after a power cut); only SQLite's checkpoint, about
    every 4 MiB of WAL, syncs the disk."""

    def __init__(self, path: str | Path, table: str, key: Sequence[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.key = require_key(key, f"the sqlite sink for {table!r}")
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=0")  # a writer elsewhere: met at once (see _write)
        self._waits = False
        self._columns: list[str] | None = None
        self._known: frozenset[str] = frozenset()  # the table's columns
        self._group = GroupCommit(self._write)

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        check_keys(rows, self.key)  # nothing is written under a missing or NULL key
        await self._group.write(rows)

    def _write(self, batches: list[Sequence[Row]], wait: bool) -> None:
        """One transaction for these batches; without ``wait``, ``WouldWait`` (nothing written)
        when another writer holds the lock, instead of waiting for it on the event loop."""
        if wait != self._waits:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS if wait else 0}")
            self._waits = wait
        try:
            self._write_rows([row for batch in batches for row in batch])
        except sqlite3.OperationalError as exc:
            if not wait and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                raise WouldWait(str(exc)) from exc
            raise

    def _write_rows(self, rows: list[Row]) -> None:
        if self._columns is None:
            self._create(rows[0])
        assert self._columns is not None
        for row in rows:
            if not self._known.issuperset(row):  # (one C call per row: the usual row adds no column)
                self._add_columns(row)
        columns = self._columns
        values = _values(rows, columns)
        self._db.execute("BEGIN IMMEDIATE")  # the lock first: a writer elsewhere is met before any work
        try:
            insert_rows(self._db, _head(self.table, tuple(columns)), len(columns), values)
            self._db.execute("COMMIT")
        except BaseException:
            rollback_quietly(self._db)  # a full disk may have rolled it back already
            raise

    def _create(self, first: Row) -> None:
        table = _ident(self.table)
        existing = [r[1] for r in self._db.execute(f'PRAGMA table_info("{table}")')]
        if not existing:
            columns = list(dict.fromkeys([*self.key, *first]))
            spec = ", ".join(f'"{_ident(c)}"' for c in columns)
            self._db.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({spec})')
            existing = columns
        keys = ", ".join(f'"{_ident(c)}"' for c in self.key)
        self._db.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS "{table}_key" ON "{table}" ({keys})')
        self._columns = existing
        self._known = frozenset(existing)

    def _add_columns(self, row: Row) -> None:
        """A column the table lacks: added (earlier rows have NULL there)."""
        assert self._columns is not None
        for column in row:
            if column not in self._known:
                self._db.execute(f'ALTER TABLE "{self.table}" ADD COLUMN "{_ident(column)}"')
                self._columns.append(column)
                self._known = frozenset(self._columns)

    async def close(self) -> None:
        await self._group.wait_idle()
        await asyncio.to_thread(self._db.close)  # (the last connection's close checkpoints what is left)


def _values(rows: Sequence[Row], columns: list[str]) -> list[Any]:
    """The rows' values, flat, in ``columns`` order (None where a row lacks one), each as SQLite
    takes it. The usual rows (every column there, plain values) take a few C calls per row."""
    if len(columns) > 1:
        try:
            values = list(chain.from_iterable(map(itemgetter(*columns), rows)))
        except KeyError:  # a row without some column
            values = [v for row in rows for v in map(row.get, columns)]
    else:
        values = [row.get(columns[0]) for row in rows]
    if _AS_IS.issuperset(map(type, values)):
        return values
    return [v if type(v) in _AS_IS else scalar(v) for v in values]


@functools.lru_cache(maxsize=64)
def _head(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT OR REPLACE INTO "{table}" ({names})'


def _ident(name: str) -> str:
    if '"' in name or "\x00" in name:
        raise ValueError(f"column or table name {name!r} may not contain quotes")
    return name

