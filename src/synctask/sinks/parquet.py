"""Rows into Parquet files (pyarrow), optionally partitioned by a column, idempotent by key.

Each write becomes one file per partition, named by a digest of the keys it holds, written to a
temporary name, fsynced and renamed: a task that runs again rewrites the same file instead of
adding one. When the sink closes (each run's end), every partition it touched is compacted into
a single file holding the last version of each key, so readers (DuckDB, pandas, Spark) see each
key once and few files. Partitions are hive style (``day=2024-01-02/``): the partition column
is read back from the directory name, as a string.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
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
        latest: dict[tuple[Any, ...], dict[str, Any]] = {}
        partition = directory.name.partition("=")[2] if self.partition_by is not None else None
        for file in files:  # oldest first: later files win
            for row in pq.read_table(file).to_pylist():
                keyed = {**row, self.partition_by: partition} if self.partition_by is not None else row
                latest[tuple(str(v) for v in row_key(keyed, self.key))] = row
        target = directory / f"part-{uuid.uuid4().hex[:12]}.parquet"
        _write_atomically(target, pa.Table.from_pylist(list(latest.values())))
        for file in files:
            file.unlink()


def _write_atomically(target: Path, table: pa.Table) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, target)
