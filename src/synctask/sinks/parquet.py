"""Rows into Parquet files (pyarrow), optionally partitioned by a column, idempotent by key.

Each write becomes one file per partition, named by a digest of the keys it holds, written to a
temporary name, fsynced and renamed: a task that runs again rewrites the same file instead of
adding one. When the sink closes (each run's end), every partition it touched is compacted into
a single file holding the last version of each key, so readers (DuckDB, pandas, Spark) see each
key once and few files; compaction streams through DuckDB within a bounded memory budget.
Partitions are hive style (``day=2024-01-02/``): the partition column is read back from the
directory name, as a string.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .base import Row, require_key, row_key


class ParquetSink:
    def __init__(self, path: str | Path, key: Sequence[str], partition_by: str | None = None) -> None:
        self.path = Path(path)
        self.key = require_key(key, f"the parquet sink {path}")
        self.partition_by = partition_by
        # Directories left with several files (a run killed before its end, or during compaction)
        # are compacted at this run's end even if it writes nothing there.
        self._touched: set[Path] = {d for d in self._directories() if len(list(d.glob("*.parquet"))) > 1}
        self._lock = asyncio.Lock()

    def _directories(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        if self.partition_by is None:
            return [self.path]
        return [d for d in self.path.iterdir() if d.is_dir() and d.name.startswith(f"{self.partition_by}=")]

    def _directory(self, value: Any) -> Path:
        if self.partition_by is None:
            return self.path
        return self.path / f"{self.partition_by}={value}"

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        groups: dict[Path, list[Row]] = {}
        for row in rows:
            row_key(row, self.key)  # a row without its key is refused before anything is written
            value = row.get(self.partition_by) if self.partition_by else None
            groups.setdefault(self._directory(value), []).append(row)
        async with self._lock:
            await asyncio.to_thread(self._write_groups, groups)

    def _write_groups(self, groups: dict[Path, list[Row]]) -> None:
        for directory, group in groups.items():
            keys = sorted(repr(row_key(r, self.key)) for r in group)
            name = "part-" + hashlib.blake2b("\n".join(keys).encode(), digest_size=12).hexdigest() + ".parquet"
            _write_atomically(directory / name, pa.Table.from_pylist([self._stored(r) for r in group]))
            self._touched.add(directory)

    def _stored(self, row: Row) -> dict[str, Any]:
        """Hive style: the partition column lives in the directory name, not in the file."""
        out = dict(row)
        if self.partition_by is not None:
            out.pop(self.partition_by, None)
        return out

    async def close(self) -> None:
        async with self._lock:
            touched, self._touched = self._touched, set()
            for directory in touched:
                await asyncio.to_thread(self._compact, directory)

    def _compact(self, directory: Path) -> None:
        files = sorted(directory.glob("*.parquet"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        if len(files) <= 1:
            return
        target = directory / f"part-{uuid.uuid4().hex[:12]}.parquet"
        self._compact_with_duckdb(directory, files, target)
        for file in files:
            file.unlink()

    def _compact_with_duckdb(self, directory: Path, files: list[Path], target: Path) -> None:
        """Keep the last version of each key, streaming through DuckDB: memory stays bounded
        (it spills to a scratch folder) however large the partition is."""
        import duckdb

        keys = [k for k in self.key if k != self.partition_by]  # the partition column is the folder's
        window = f"PARTITION BY {', '.join(_quote(k) for k in keys)} " if keys else ""
        scratch = directory / f".compact-{uuid.uuid4().hex[:8]}"
        temporary = target.with_name(f".{target.name}.tmp")
        paths = [str(f) for f in files]
        con = duckdb.connect()
        try:
            con.execute(f"SET temp_directory = {_literal(str(scratch))}")
            con.execute("SET memory_limit = '256MB'")
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET enable_progress_bar = false")
            relation = con.sql(
                "SELECT * EXCLUDE (_synctask_file, _synctask_order) FROM ("
                "  SELECT r.*, o._synctask_order FROM read_parquet(?, filename = '_synctask_file',"
                "    union_by_name = true, hive_partitioning = false) AS r"
                "  JOIN (SELECT unnest(?) AS _synctask_path, unnest(range(?)) AS _synctask_order) AS o"
                "    ON r._synctask_file = o._synctask_path)"
                f" QUALIFY row_number() OVER ({window}ORDER BY _synctask_order DESC) = 1",
                params=[paths, paths, len(paths)])
            # DuckDB 2 names it to_arrow_reader; 1.x fetch_arrow_reader. Either streams batches.
            reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            batches = reader(batch_size=100_000)
            # pyarrow writes every file of the dataset, batch by batch, with nullable columns
            # (DuckDB would mark a column REQUIRED when this partition happens to hold no null).
            schema = pa.schema([f.with_nullable(True) for f in batches.schema])
            with pq.ParquetWriter(temporary, schema) as writer:
                for batch in batches:
                    writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
        finally:
            con.close()
            shutil.rmtree(scratch, ignore_errors=True)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _write_atomically(target: Path, table: pa.Table) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, target)
