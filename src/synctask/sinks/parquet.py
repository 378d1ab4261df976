"""Rows into Parquet files (pyarrow), optionally partitioned by a column, idempotent by key.

Each write becomes one file per partition, named by a digest of the keys it holds, written to a
temporary name, fsynced and renamed: a task that runs again rewrites the same file instead of
adding one. When the sink closes (each run's end), every partition it touched is compacted into
a single file holding the last version of each key, so readers (DuckDB, pandas, Spark) see each
key once and few files; compaction streams through DuckDB within a bounded memory budget.
Partitions are hive style (``day=2024-01-02/``): the partition column is read back from the
directory name, as a string.

Compaction is atomic for readers and for crashes. The compacted partition is built in a staging
folder beside the dataset (``.daily.compacting/``, outside any reader's glob), then swapped with
the live partition in one ``renameat2(RENAME_EXCHANGE)``: a reader lists either every old file
or the one new file, never both. Where the filesystem cannot exchange, two renames do it (a
reader may then briefly find the partition missing, never doubled). ``recover()``, which the
executor calls when a run starts even if nothing is fetched, finishes or discards whatever a
killed process left: staging folders, stray temporary files, partitions of several files.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno as _errno
import functools
import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .base import Row, check_keys, require_key, row_key


class ParquetSink:
    def __init__(self, path: str | Path, key: Sequence[str], partition_by: str | None = None) -> None:
        self.path = Path(path)
        self.key = require_key(key, f"the parquet sink {path}")
        self.partition_by = partition_by
        self.staging = self.path.parent / f".{self.path.name}.compacting"
        self._touched: set[Path] = set()
        self._lock = asyncio.Lock()

    async def recover(self) -> None:
        """Repair what a killed process left: finish or undo an interrupted swap, drop staging
        folders and temporary files, and compact every partition left with several files."""
        async with self._lock:
            await asyncio.to_thread(self._recover)

    def _recover(self) -> None:
        if self.staging.is_dir():
            for stage in sorted(self.staging.iterdir()):
                _finish_swap(stage)
            shutil.rmtree(self.staging, ignore_errors=True)
        for directory in self._directories():
            for stray in [*directory.glob(".part-*.tmp"), *directory.glob(".compact-*")]:
                if stray.is_dir():
                    shutil.rmtree(stray, ignore_errors=True)
                else:
                    stray.unlink(missing_ok=True)
            self._compact(directory)

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
        check_keys(rows, self.key)  # nothing is written under a missing or NULL key
        groups: dict[Path, list[Row]] = {}
        for row in rows:
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
        stage = self.staging / uuid.uuid4().hex[:12]
        fresh = stage / "new"
        fresh.mkdir(parents=True)
        target = fresh / f"part-{uuid.uuid4().hex[:12]}.parquet"
        self._compact_with_duckdb(stage, files, target)
        _fsync_directory(fresh)
        # Only a complete new partition names its target: a stage without one is discarded.
        _write_text_atomically(stage / "target", str(directory.resolve()))
        _swap(fresh, directory, stage / "old")
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.staging.rmdir()  # only when empty: nothing beside the dataset between runs

    def _compact_with_duckdb(self, workspace: Path, files: list[Path], target: Path) -> None:
        """Keep the last version of each key, streaming through DuckDB: memory stays bounded
        (it spills to a scratch folder in ``workspace``) however large the partition is."""
        import duckdb

        keys = [k for k in self.key if k != self.partition_by]  # the partition column is the folder's
        window = f"PARTITION BY {', '.join(_quote(k) for k in keys)} " if keys else ""
        scratch = workspace / f".compact-{uuid.uuid4().hex[:8]}"
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


def _swap(fresh: Path, live: Path, old: Path) -> None:
    """Put ``fresh`` where ``live`` is, atomically when the filesystem can exchange two names;
    the previous contents end up at ``fresh`` (exchanged) or ``old`` (two renames)."""
    if not _exchange(fresh, live):
        os.rename(live, old)
        os.rename(fresh, live)
    _fsync_directory(live.parent)


def _finish_swap(stage: Path) -> None:
    """A swap a killed process left: if its live partition is gone (between the two renames),
    put the new one there, else the old one; in every other case the live one is whole."""
    marker = stage / "target"
    if not marker.is_file():
        return  # never got as far as naming its target: the live partition was not touched
    live = Path(marker.read_text())
    if live.exists():
        return
    for candidate in (stage / "new", stage / "old"):
        if candidate.is_dir():
            os.rename(candidate, live)
            return


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False when this system cannot."""
    libc = _libc()
    if libc is None:
        return False
    result = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (_errno.EINVAL, _errno.ENOSYS, _errno.EOPNOTSUPP, _errno.EXDEV):
        return False
    raise OSError(errno, f"could not swap {a} and {b}: {os.strerror(errno)}")


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        libc.renameat2.restype = ctypes.c_int
    except (OSError, AttributeError):  # a libc older than glibc 2.28 has no wrapper
        return None
    return libc


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomically(target: Path, text: str) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
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
