"""Where rows go. Every sink is idempotent by the dataset's key: writing the same rows twice
leaves the data as if written once. ``write`` returns only when the rows are durable.

Available: ``memory`` (tests), ``sqlite``, ``duckdb``, ``postgres``, ``parquet``, ``jsonl``,
``callback`` and ``StreamSink`` (an async iterator) for client code, given from Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Row, Sink
from .callback import CallbackSink
from .memory import MemorySink
from .sqlite import SQLiteSink
from .stream import StreamSink

__all__ = ["Row", "Sink", "MemorySink", "SQLiteSink", "CallbackSink", "StreamSink", "open_sink"]


def open_sink(dataset: str, spec: Mapping[str, Any], base: Path | None = None, *,
              check_only: bool = False) -> Sink | None:
    """Build the sink a dataset's ``sink = {...}`` table describes (paths relative to ``base``);
    ``check_only`` validates the table without creating anything."""
    kind = spec.get("kind", "memory")
    key = list(spec.get("key", []))
    if kind == "memory":
        return None if check_only else MemorySink(key)
    if kind == "sqlite":
        if not key:
            raise ValueError(f"the sqlite sink of dataset {dataset!r} needs key = [...] columns to stay idempotent")
        path = Path(spec.get("path", "data/synctask.db"))
        if base is not None and not path.is_absolute():
            path = base / path
        return None if check_only else SQLiteSink(path, spec.get("table", dataset), key)
    if kind == "duckdb":
        if not key:
            raise ValueError(f"the duckdb sink of dataset {dataset!r} needs key = [...] columns to stay idempotent")
        path = Path(spec.get("path", "data/synctask.duckdb"))
        if base is not None and not path.is_absolute():
            path = base / path
        from .duckdb import DuckDBSink

        return None if check_only else DuckDBSink(path, spec.get("table", dataset), key)
    if kind == "parquet":
        if not key:
            raise ValueError(f"the parquet sink of dataset {dataset!r} needs key = [...] columns to stay idempotent")
        path = Path(spec.get("path", f"data/{dataset}"))
        if base is not None and not path.is_absolute():
            path = base / path
        from .parquet import ParquetSink

        return None if check_only else ParquetSink(path, key, spec.get("partition_by"))
    if kind == "jsonl":
        if not key:
            raise ValueError(f"the jsonl sink of dataset {dataset!r} needs key = [...] columns to stay idempotent")
        path = Path(spec.get("path", f"data/{dataset}.jsonl"))
        if base is not None and not path.is_absolute():
            path = base / path
        from .jsonl import JsonlSink

        return None if check_only else JsonlSink(path, key)
    if kind == "postgres":
        if not key:
            raise ValueError(f"the postgres sink of dataset {dataset!r} needs key = [...] columns to stay idempotent")
        dsn = spec.get("dsn")
        if not isinstance(dsn, str):
            raise ValueError(f"the postgres sink of dataset {dataset!r} needs dsn = \"host=... dbname=...\" "
                             "(put the password in PGPASSWORD, not in the plan file)")
        from .postgres import PostgresSink

        return None if check_only else PostgresSink(dsn, spec.get("table", dataset), key, spec.get("schema"))
    if kind == "callback":
        raise ValueError(f"dataset {dataset!r}: a callback sink is given from Python, "
                         "executor.add_dataset(dataset, sink=CallbackSink(function)), not in a plan file")
    raise ValueError(
        f"sink kind {kind!r} for dataset {dataset!r} is not available; "
        "use 'sqlite', 'duckdb', 'postgres', 'parquet', 'jsonl' or 'memory'"
    )
