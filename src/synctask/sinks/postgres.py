"""Rows into PostgreSQL (psycopg 3), upserted by key: ``INSERT ... ON CONFLICT (key) DO UPDATE``.

The table is created from the first rows (BIGINT, DOUBLE PRECISION, BOOLEAN or TEXT columns,
a unique index on the key); each write is one committed transaction, so it is durable when
``write`` returns. Passwords stay out of plan files: libpq reads ``PGPASSWORD`` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from .base import Row, check_keys, require_key, scalar, sql_type


def _column_type(value: Any) -> str:
    return sql_type(value, double="DOUBLE PRECISION", text="TEXT")


class PostgresSink:
    def __init__(self, dsn: str, table: str, key: Sequence[str], schema: str | None = None) -> None:
        self.dsn = dsn
        self.table = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        self.key = require_key(key, f"the postgres sink for {table!r}")
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._columns: list[str] | None = None
        self._lock = asyncio.Lock()

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        check_keys(rows, self.key)  # nothing is written under a missing or NULL key
        async with self._lock:
            conn = await self._connect()
            async with conn.transaction():
                if self._columns is None:
                    await self._create(conn, rows[0])
                await self._add_columns(conn, rows)
                assert self._columns is not None
                await self._upsert(conn, rows, self._columns)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn)
        return self._conn

    async def _create(self, conn: psycopg.AsyncConnection[Any], first: Row) -> None:
        columns = list(dict.fromkeys([*self.key, *first]))
        spec = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_column_type(first.get(c)))) for c in columns)
        await conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.table, spec))
        await conn.execute(sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(f"{self.table.as_string(None).replace(chr(34), '')}_key".replace(".", "_")),
            self.table, sql.SQL(", ").join(map(sql.Identifier, self.key))))
        cursor = await conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(self.table))
        self._columns = [d.name for d in cursor.description or []]

    async def _add_columns(self, conn: psycopg.AsyncConnection[Any], rows: Sequence[Row]) -> None:
        assert self._columns is not None
        for row in rows:
            for column, value in row.items():
                if column not in self._columns:
                    await conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        self.table, sql.Identifier(column), sql.SQL(_column_type(value))))
                    self._columns.append(column)

    async def _upsert(self, conn: psycopg.AsyncConnection[Any], rows: Sequence[Row], columns: list[str]) -> None:
        others = [c for c in columns if c not in self.key]
        action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others))
            if others else sql.SQL("DO NOTHING"))
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
            self.table,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() for _ in columns),
            sql.SQL(", ").join(map(sql.Identifier, self.key)),
            action,
        )
        values = [tuple(scalar(row.get(c)) for c in columns) for row in rows]
        async with conn.cursor() as cursor:
            await cursor.executemany(statement, values)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

