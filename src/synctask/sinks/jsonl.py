"""Rows into a JSON Lines file, idempotent by key, in memory bounded by what is in flight.

The file is a log: a row whose key is new, or whose content changed, is appended; a row seen
before with the same content is not written again (except in a batch of new keys, which is
appended before its keys are indexed, without a lookup: a known key among them has a second
line until compaction, and the batches after it are looked up first). Which keys the file holds, on which line and
with what content (a digest) is kept on disk, in a SQLite index beside it (``.NAME.keys``), not
in memory: ten million rows cost the index's page cache, not ten million dict entries. When the
sink closes (each run's end), and when it opens, a file where a key was written twice is
compacted to the last version of each key (a streamed merge of the file with the index's line
numbers; write, fsync, rename), so after any run the file holds each key once. The index
records the file's size with every change; a file that does not match (a crash between the
two, a file edited by hand, an index deleted) has its index rebuilt from the file. ``write``
returns once the lines are flushed to the operating system, which survives the process being
killed; the rows of tasks that finish in the same loop turn are looked up, appended and indexed
together (``GroupCommit``). A line is the row's JSON with its keys sorted and no spaces; an
index whose digests were made otherwise (by an earlier version) is rebuilt once when it opens.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import xxhash

from ..disk import rollback_quietly
from ..upsert import insert_rows
from .base import Row, check_keys, require_key, row_key
from .group import GroupCommit

__all__ = ["JsonlSink", "index_path"]

_CHUNK = 500  # keys looked up per query (SQLite's parameter limit is far above)
COMMIT_EVERY = 1.0  # seconds between commits of the index (a crash meanwhile: it is rebuilt from the file)


def _parse(text: str) -> Any:
    """A line read back: orjson, or json for what only it reads (NaN, integers above 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def index_path(path: Path) -> Path:
    """Where the index of a JSONL file lives: a hidden file beside it."""
    return path.with_name(f".{path.name}.keys")


_xxh3 = xxhash.xxh3_64_intdigest
_HALF = 1 << 63  # xxh3's 64 bits made signed: SQLite's INTEGER (an integer binds at half a BLOB's cost)


def _digest(line: bytes) -> int:
    """A line's digest: xxh3, 64 bits, as SQLite's signed integer (a tenth of blake2b's cost,
    and a changed row goes unseen once in 2**64)."""
    return _xxh3(line) - _HALF


# orjson writes a row several times faster than json; what it would write differently (dates,
# dataclasses and subclasses of the JSON types, whose text is their str() as before), or refuses
# (integers above 64 bits, keys that are not text), json writes, in the same compact form.
_ORJSON = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
           | orjson.OPT_PASSTHROUGH_SUBCLASS)
_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":")).encode
_KEY = json.JSONEncoder(ensure_ascii=False, default=str).encode
DIGESTS = "xxh3-1"  # how the index's digests are made (of compact lines): an index made otherwise is rebuilt


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _line(row: Row) -> bytes:
    """A row as its line, without the newline: JSON, keys sorted, no spaces (NaN and infinities
    are null: JSON has neither). The same row always gives the same bytes: their digest is what
    tells a changed row from one written before."""
    try:
        return orjson.dumps(row, default=_refuse, option=_ORJSON)
    except orjson.JSONEncodeError:
        return _JSON(row).encode()


def _key_text(row: Row, key: Sequence[str]) -> str:
    """A row's key as the index's text: ``s<text>`` / ``i<number>`` per column (the usual keys,
    cheap), else its JSON (which starts with ``[``, so the two never meet)."""
    if len(key) == 1:  # the usual case, without a tuple per row
        value = row.get(key[0])
        if type(value) is str:
            if "\x00" not in value:
                return "s" + value
        elif type(value) is int:
            return f"i{value}"
    values = row_key(row, key)
    parts = []
    for value in values:
        kind = type(value)
        if kind is str and "\x00" not in value:
            parts.append("s" + value)
        elif kind is int:
            parts.append(f"i{value}")
        else:
            return _KEY(values)
    return "\x00".join(parts)


class JsonlSink:
    def __init__(self, path: str | Path, key: Sequence[str]) -> None:
        self.path = Path(path)
        self.key = require_key(key, f"the jsonl sink {path}")
        self._db: sqlite3.Connection | None = None
        self._file: Any = None
        self._lines = 0  # lines in the file (the next one appended gets this number)
        self._dirty = False  # some key is in the file more than once (or a line is torn)
        self._fresh = False  # the last batch's keys were all new: the next is appended without a lookup first
        self._committed = 0.0  # when the index was last committed (monotonic)
        self._group = GroupCommit(self._write_batches)  # one lookup, one write for a loop turn's rows

    async def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        check_keys(rows, self.key)  # nothing is written under a missing or NULL key
        await self._group.write(rows)

    def _write_batches(self, batches: list[Sequence[Row]], wait: bool) -> None:
        self._write([row for batch in batches for row in batch] if len(batches) > 1 else batches[0])

    def _write(self, rows: Sequence[Row]) -> None:
        if self._file is None:
            self._open()
        db = self._db
        assert db is not None
        latest = self._latest(rows)
        if not db.in_transaction:
            db.execute("BEGIN")
        if self._fresh:
            self._append_new(db, latest)
        else:
            self._append_changed(db, latest)
        if time.monotonic() - self._committed >= COMMIT_EVERY:
            self._commit()

    def _append_new(self, db: sqlite3.Connection, latest: dict[str, bytes]) -> None:
        """Rows whose keys the file most likely lacks (the last batch's all did): appended, and
        indexed by a plain INSERT, which fails if a key is known after all. Then each known key
        has a second line (the same or a changed row; compaction keeps the last) and the index
        takes the new lines; later batches are looked up first, until one is all new again."""
        base = self._lines
        changes: list[Any] = []  # key, digest, line number, flat
        for number, (key, line) in enumerate(latest.items(), base):
            changes += (key, _xxh3(line) - _HALF, number)  # (_digest, without a call of ours per row)
        self._append(list(latest.values()))
        try:
            insert_rows(db, "INSERT INTO k(key, digest, line)", 3, changes)
        except sqlite3.IntegrityError:  # some key was there (the failed statement changed nothing)
            self._dirty = True
            self._fresh = False
            insert_rows(db, "INSERT OR REPLACE INTO k(key, digest, line)", 3, changes)

    def _append_changed(self, db: sqlite3.Connection, latest: dict[str, bytes]) -> None:
        """Rows of which some were written before: each looked up, and only the new or changed
        appended and indexed."""
        known = dict(self._known(list(latest)))
        lines: list[bytes] = []
        changes: list[Any] = []  # key, digest, line number, flat
        for key, line in latest.items():
            digest = _xxh3(line) - _HALF  # (_digest, without a call of ours per row)
            before = known.get(key)
            if before == digest:
                continue  # the same row again: nothing to write
            if before is not None:
                self._dirty = True
            changes += (key, digest, self._lines + len(lines))
            lines.append(line)
        self._fresh = not known  # none was known: the next batch goes the quick way
        if lines:
            self._append(lines)
            insert_rows(db, "INSERT OR REPLACE INTO k(key, digest, line)", 3, changes)

    def _append(self, lines: list[bytes]) -> None:
        """Lines (without their newlines) at the end of the file, flushed to the system."""
        self._file.write(b"\n".join(lines) + b"\n")
        self._file.flush()
        self._lines += len(lines)

    def _latest(self, rows: Sequence[Row]) -> dict[str, bytes]:
        """Each key's last line in ``rows``, by its index text (``_key_text`` and ``_line``, with
        the usual single text key and orjson's line taken without a call of ours per row)."""
        latest: dict[str, bytes] = {}
        key = self.key
        if len(key) != 1:
            for row in rows:
                latest[_key_text(row, key)] = _line(row)
            return latest
        column = key[0]
        dumps = orjson.dumps
        for row in rows:
            value = row.get(column)
            text = "s" + value if type(value) is str and "\x00" not in value else _key_text(row, key)
            try:
                latest[text] = dumps(row, default=_refuse, option=_ORJSON)
            except orjson.JSONEncodeError:
                latest[text] = _JSON(row).encode()
        return latest

    def _commit(self) -> None:
        """The index as of now, with the file's size and line count (what the next open checks)."""
        db = self._db
        assert db is not None and self._file is not None
        if not db.in_transaction:
            db.execute("BEGIN")
        try:
            self._save_meta(os.fstat(self._file.fileno()).st_size)
            db.execute("COMMIT")
        except BaseException:
            rollback_quietly(db)  # (the next open finds the file larger than the index says: rebuilds it)
            raise
        self._committed = time.monotonic()

    def _known(self, keys: list[str]) -> Iterator[tuple[str, int]]:
        assert self._db is not None
        for i in range(0, len(keys), _CHUNK):
            part = keys[i:i + _CHUNK]
            marks = ", ".join("?" * len(part))
            yield from self._db.execute(f"SELECT key, digest FROM k WHERE key IN ({marks})", part)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        size = self.path.stat().st_size if self.path.exists() else 0
        meta = dict(self._db.execute("SELECT name, value FROM meta"))
        if meta.get("size") != size or meta.get("digests") != DIGESTS:
            self._rebuild()
        else:
            self._lines, self._dirty = int(meta.get("lines", 0)), bool(meta.get("dirty", 0))
        self._compact()
        self._file = self.path.open("ab")

    def _connect(self) -> sqlite3.Connection:
        where = index_path(self.path)
        for attempt in (1, 2):
            db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS k(key TEXT PRIMARY KEY, digest INTEGER, line INTEGER) "
                           "WITHOUT ROWID")
                db.execute("CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value) WITHOUT ROWID")
                db.execute("SELECT count(*) FROM meta").fetchone()
                return db
            except sqlite3.DatabaseError:
                db.close()
                if attempt == 2:
                    raise
                for leftover in (where, where.with_name(where.name + "-wal"), where.with_name(where.name + "-shm")):
                    leftover.unlink(missing_ok=True)  # a damaged index: it is only a cache of the file
        raise AssertionError("unreachable")  # pragma: no cover

    def _rebuild(self) -> None:
        """The index from the file itself, streamed (each key's last line wins)."""
        db = self._db
        assert db is not None
        db.execute("BEGIN")
        db.execute("DELETE FROM k")
        count = kept = 0
        dirty = False
        batch: list[tuple[str, int, int]] = []
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as existing:
                for number, line in enumerate(existing):
                    count = number + 1
                    text = line.rstrip("\n")
                    try:
                        row = _parse(text)
                        if not line.endswith("\n") or not isinstance(row, dict):
                            raise ValueError("a torn or foreign line")
                        # (the digest of the row as it is written now, whatever the line's spacing)
                        batch.append((_key_text(row, self.key), _digest(_line(row)), number))
                    except ValueError:
                        dirty = True  # a line cut short by a crash (its task runs again): dropped
                        continue
                    if len(batch) >= 10_000:
                        kept += len(batch)
                        db.executemany("INSERT OR REPLACE INTO k(key, digest, line) VALUES (?, ?, ?)", batch)
                        batch.clear()
        kept += len(batch)
        db.executemany("INSERT OR REPLACE INTO k(key, digest, line) VALUES (?, ?, ?)", batch)
        keys = db.execute("SELECT count(*) FROM k").fetchone()[0]
        self._lines, self._dirty = count, dirty or keys < kept
        self._save_meta(self.path.stat().st_size if self.path.exists() else 0)
        db.execute("COMMIT")

    def _compact(self) -> None:
        """Keep each key's last line only: a merge of the file with the index's line numbers, in
        order, so memory stays flat; the index is renumbered in the same step."""
        if not self._dirty:
            return
        db = self._db
        assert db is not None
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        kept = 0
        with temporary.open("w", encoding="utf-8") as out:
            wanted = (line for (line,) in db.execute("SELECT line FROM k ORDER BY line"))
            target = next(wanted, None)
            if target is not None and self.path.exists():
                with self.path.open(encoding="utf-8", errors="replace") as source:
                    for number, line in enumerate(source):
                        if number != target:
                            continue
                        out.write(line)
                        kept += 1
                        target = next(wanted, None)
                        if target is None:
                            break
            out.flush()
            os.fsync(out.fileno())
        db.execute("BEGIN")
        try:
            db.execute("CREATE TEMP TABLE renumbered AS SELECT key, digest, "
                       "ROW_NUMBER() OVER (ORDER BY line) - 1 AS line FROM k")
            db.execute("DELETE FROM k")
            db.execute("INSERT INTO k(key, digest, line) SELECT key, digest, line FROM renumbered")
            db.execute("DROP TABLE renumbered")
            self._lines, self._dirty = kept, False
            self._save_meta(temporary.stat().st_size)
            db.execute("COMMIT")
        except BaseException:
            rollback_quietly(db)
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, self.path)  # (killed before this: the index does not match the file: rebuilt)

    def _save_meta(self, size: int) -> None:
        assert self._db is not None
        self._db.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)",
                             [("size", size), ("lines", self._lines), ("dirty", int(self._dirty)),
                              ("digests", DIGESTS)])

    def _close(self) -> None:
        if self._file is not None:
            self._commit()
            self._file.close()
            self._file = None
            self._compact()
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        await self._group.wait_idle()
        await asyncio.to_thread(self._close)
