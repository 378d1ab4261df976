"""The state's writer: task outcomes committed in batches, on the event loop.

The loop hands each turn's outcomes over (``submit``) and they are committed at once, many rows
per statement. In WAL mode with ``synchronous=NORMAL`` a commit is a write to the page cache;
only SQLite's checkpoint, about every 4 MiB of WAL, syncs the disk. (A writer thread cost more
CPU than the commits: each hand-over of the GIL wakes two threads.) A failed commit fails every
later call too: outcomes after it were not recorded, and the run must end (see ``delivery``).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING

from .disk import rollback_quietly

if TYPE_CHECKING:
    from .store import TaskRecord

__all__ = ["Writer"]


class Writer:
    """Commits batches of task outcomes (with runs' counts) in one transaction each."""

    # Rows per INSERT, 9 parameters each, within SQLite's limit (999 before 3.32, 32,766 since):
    # one statement per batch, not one per row.
    _ROWS = 3_600 if sqlite3.sqlite_version_info >= (3, 32) else 110

    def __init__(self, db: sqlite3.Connection, path: str, unwritable: Callable[[str, BaseException], Exception]
                 ) -> None:
        self._db = db
        self._path = path
        self._unwritable = unwritable  # the error to keep when a commit fails (it names the path)
        self._error: BaseException | None = None

    def submit(self, batch: list[TaskRecord], counts: Sequence[tuple[str, str]] = ()) -> None:
        """Commit ``batch`` and runs' ``counts`` ((JSON, run id) pairs) in one transaction."""
        self._raise_error()
        try:
            self._db.execute("BEGIN")
            try:
                self._insert(batch)
                if counts:
                    self._db.executemany("UPDATE runs SET summary = ? WHERE id = ?", counts)
                self._db.execute("COMMIT")
            except BaseException:
                rollback_quietly(self._db)  # after a full disk SQLite may have rolled back itself
                raise
        except sqlite3.Error as exc:
            self._error = self._unwritable(self._path, exc)
            raise self._error from None

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Around every other statement: after a failed commit, nothing more is written."""
        self._raise_error()
        yield

    def close(self) -> None:
        self._raise_error()

    def _insert(self, records: list[TaskRecord]) -> None:
        """Insert ``records``, up to ``_ROWS`` per statement (multi-row VALUES: one step, where
        ``executemany`` steps once per row)."""
        start, left = 0, len(records)
        while left:
            # _ROWS at a time, then the rest in power-of-two statements: few distinct statements
            # (SQLite keeps them prepared), few GIL takes.
            rows = self._ROWS if left >= self._ROWS else 1 << (left.bit_length() - 1)
            self._db.execute(_insert_sql(rows), list(chain.from_iterable(records[start:start + rows])))
            start, left = start + rows, left - rows

    def _raise_error(self) -> None:
        """A failed commit fails every later call too: outcomes after it were not recorded."""
        if self._error is not None:
            raise self._error


@functools.cache
def _insert_sql(rows: int) -> str:
    """INSERT of ``rows`` task outcomes in one statement."""
    return ("INSERT OR REPLACE INTO tasks (task_id, plan, run_id, state, attempts, message, at, follow_up, params) "
            "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows))
