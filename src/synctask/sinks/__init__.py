"""Where rows go. Every sink is idempotent by the dataset's key: writing the same rows twice
leaves the data as if written once. ``write`` returns only when the rows are durable.

Available: ``memory`` (tests), ``sqlite``, ``duckdb``, ``postgres``, ``parquet``, ``jsonl``,
``callback`` and ``StreamSink`` (an async iterator) for client code, given from Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Row, Sink, require_key
from .callback import CallbackSink
from .memory import MemorySink
from .sqlite import SQLiteSink
from .stream import StreamSink

__all__ = ["Row", "Sink", "MemorySink", "SQLiteSink", "CallbackSink", "StreamSink", "open_sink", "rows_of",
           "sink_place", "sink_file", "sink_identity", "describe_identity"]


def rows_of(result: Any) -> list[Mapping[str, Any]]:
    """The rows in a task's result: a list of dicts, one dict, or none (None, or any other value)."""
    if type(result) is list and all(type(r) is dict for r in result):
        return result  # (the usual answer, decoded JSON: no copy, and no ABC check per row)
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(r, Mapping) for r in result):
        return list(result)
    return []


def sink_place(dataset: str, sink: Sink | None, spec: Mapping[str, Any], base: Path) -> str:
    """Where a dataset's rows go, for a message: the sink's file, else its kind."""
    path = getattr(sink, "path", None)
    if path is not None:
        return str(path)
    if spec.get("path"):
        return str(base / str(spec["path"]))
    return f"the {spec.get('kind', 'given')} sink of dataset {dataset!r}"


def sink_file(dataset: str, spec: Mapping[str, Any], base: Path) -> Path | None:
    """The file or folder a sink table writes (``base`` for relative paths), None for a sink
    without one (memory, postgres) or a table too broken to say (``open_sink`` names that)."""
    kind = spec.get("kind", "memory")
    default = _DEFAULT_PATHS.get(kind) if isinstance(kind, str) else None
    if default is None:
        return None
    path = spec.get("path", default.format(dataset=dataset))
    if not isinstance(path, str) or not path:
        return None
    return base / path


def sink_identity(dataset: str, spec: Mapping[str, Any], base: Path) -> dict[str, Any] | None:
    """Where a sink's rows live, to compare across runs (None for a memory or callback sink)."""
    kind = spec.get("kind", "memory")
    if kind in ("memory", "callback"):
        return None
    place = sink_file(dataset, spec, base)
    return {"kind": kind, "path": str(place.resolve()) if place is not None else None,
            "table": spec.get("table", dataset) if kind in ("sqlite", "duckdb", "postgres") else None,
            "dsn": spec.get("dsn"), "schema": spec.get("schema")}


def describe_identity(identity: Mapping[str, Any]) -> str:
    """A sink's place in words: its file (and table), or its database and table."""
    where = identity.get("path") or f"the database {identity.get('dsn')!r}"
    table = identity.get("table")
    return f"{where} (table {table})" if table else str(where)


def open_sink(dataset: str, spec: Mapping[str, Any], base: Path | None = None, *,
              check_only: bool = False) -> Sink | None:
    """Build the sink a dataset's ``sink = {...}`` table describes (paths relative to ``base``);
    ``check_only`` validates the table without creating anything."""
    kind = spec.get("kind", "memory")
    if kind == "memory":
        return None if check_only else MemorySink(list(spec.get("key", [])))
    if kind == "callback":
        raise ValueError(f"dataset {dataset!r}: a callback sink is given from Python, "
                         "executor.add_dataset(dataset, sink=CallbackSink(function)), not in a plan file")
    default_path = _DEFAULT_PATHS.get(kind)
    if default_path is None and kind != "postgres":
        raise ValueError(
            f"sink kind {kind!r} for dataset {dataset!r} is not available; "
            "use 'sqlite', 'duckdb', 'postgres', 'parquet', 'jsonl' or 'memory'"
        )
    key = require_key(spec.get("key", []), f"the {kind} sink of dataset {dataset!r}")
    table = spec.get("table", dataset)
    if kind == "postgres":
        dsn = spec.get("dsn")
        if not isinstance(dsn, str):
            raise ValueError(f"the postgres sink of dataset {dataset!r} needs dsn = \"host=... dbname=...\" "
                             "(put the password in PGPASSWORD, not in the plan file)")
        if check_only:
            return None
        from .postgres import PostgresSink

        return PostgresSink(dsn, table, key, spec.get("schema"))
    assert default_path is not None
    path = Path(spec.get("path", default_path.format(dataset=dataset)))
    if base is not None and not path.is_absolute():
        path = base / path
    if check_only:
        return None
    if kind == "sqlite":
        return SQLiteSink(path, table, key)
    if kind == "duckdb":
        from .duckdb import DuckDBSink

        return DuckDBSink(path, table, key)
    if kind == "parquet":
        from .parquet import ParquetSink

        return ParquetSink(path, key, spec.get("partition_by"))
    from .jsonl import JsonlSink

    return JsonlSink(path, key)


_DEFAULT_PATHS = {
    "sqlite": "data/synctask.db",
    "duckdb": "data/synctask.duckdb",
    "parquet": "data/{dataset}",
    "jsonl": "data/{dataset}.jsonl",
}
